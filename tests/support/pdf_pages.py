"""Reading PDFs the way a person would: pages rendered by PDFium (the engine Chrome uses)
and the text it finds on them, so a test judges the document and not fpdf2's input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium

A4_POINTS = (595.28, 841.89)


@dataclass(frozen=True)
class Page:
    text: str  # whitespace collapsed to single spaces
    size: tuple[float, float]  # points
    dark_fraction: float  # share of pixels darker than mid-grey once rendered
    distinct_greys: int


def read_pages(document: bytes, png_dir: Path | None = None, stem: str = "page") -> list[Page]:
    """Every page rendered at 100 dpi; with `png_dir`, each is also saved there as a PNG artifact."""
    pdf = pdfium.PdfDocument(document)
    pages = []
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            image = page.render(scale=100 / 72).to_pil()
            if png_dir is not None:
                image.save(png_dir / f"{stem}-{index + 1}.png")
            grey = image.convert("L")
            histogram = grey.histogram()
            pages.append(Page(
                text=" ".join(page.get_textpage().get_text_range().split()),
                size=(round(page.get_width(), 2), round(page.get_height(), 2)),
                dark_fraction=sum(histogram[:128]) / (grey.width * grey.height),
                distinct_greys=sum(1 for count in histogram if count),
            ))
    finally:
        pdf.close()
    return pages
