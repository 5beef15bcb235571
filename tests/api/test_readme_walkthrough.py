"""The README's connector walkthrough (docs/connector_walkthrough.py) runs as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import REPO_ROOT, ServerProcess


def test_connector_walkthrough_ends_with_the_invoice_the_readme_promises(
    server: ServerProcess, tenant: dict[str, str],
) -> None:
    env = dict(server.env, METERBILL_URL=server.base_url,
               **{f"METERBILL_{key.upper()}": value for key, value in tenant.items()})
    run = subprocess.run([sys.executable, str(REPO_ROOT / "docs" / "connector_walkthrough.py")], env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    # The renewal invoice: next month's Starter fee in advance ($49.00) plus the ended month's usage,
    # 100,000 calls at $0.002 and 50,000 at $0.001 = $200.00 + $50.00.
    assert "total 299.00 USD" in out, out
    assert "250.00" in out and "49.00" in out, out
    assert "150000" in out, out  # the usage line shows its quantity, not "1"
    assert "plan price -> aggregation: 400" in out, out
    assert "mappings now: ['starter-usd-monthly']" in out, out
