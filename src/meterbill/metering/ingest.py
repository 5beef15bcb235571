"""Measurement ingest: validate a whole batch, then store it idempotently in one transaction.

A batch is all-or-nothing: one bad measurement (a measurement with no data field
at all included) rejects the request with an error naming its index and field,
and nothing is stored. Accepted measurements are
committed to the measurement store (`metering.store`) before the response,
deduplicated on `uid` per organization (a replay is answered `accepted` and stores
nothing new), their numeric fields in millionths so aggregation is exact integer
arithmetic.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal, Union

import msgspec
import orjson
from prometheus_client import Counter
from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from meterbill.core.db import Database, bound_values, in_bound, insert_new, one_of, utcnow
from meterbill.core.errors import InvalidInput
from meterbill.core.grouping import Waiting, run_grouped
from meterbill.metering import schemas
from meterbill.metering.calculations import CalculationError, Expression, evaluate, parse
from meterbill.metering.config import document_body
from meterbill.metering.measurement_fields import NUMERIC_CATEGORIES, TEXT_CATEGORIES
from meterbill.metering.models import ConfigEntity
from meterbill.metering.store import EncodedBatch, MeasurementStore, NewMeasurement, outside_store, store_for

MAX_MEASUREMENTS = 1000
MAX_BODY_BYTES = 512_000
MICROS = Decimal(1_000_000)
MICROS_PER_UNIT = 1_000_000
MAX_ABS_VALUE = Decimal("1e12")
MAX_ABS_INT = 10**12
_CATEGORIES = (*TEXT_CATEGORIES, *NUMERIC_CATEGORIES)
ALLOWED_KEYS = frozenset({"uid", "meter", "account", "ts", "ets", *TEXT_CATEGORIES, *NUMERIC_CATEGORIES})
_NONE: frozenset[str] = frozenset()
SKELETON_EMAIL = "unknown@skeleton.invalid"


@dataclass(frozen=True)
class MeterSchema:
    """What a meter accepts, by category, and how its derived fields are computed."""

    id: str
    fields_by_category: Mapping[str, frozenset[str]]
    derived: Mapping[str, Expression]

    @classmethod
    def of(cls, entity: ConfigEntity) -> MeterSchema:
        meter = document_body(entity, schemas.MeterBody)
        by_category: dict[str, set[str]] = {}
        for data_field in meter.data_fields:
            by_category.setdefault(data_field.category.lower(), set()).add(data_field.code)
        derived = {}
        for derived_field in meter.derived_fields:
            try:
                derived[derived_field.code] = parse(derived_field.calculation)
            except CalculationError:
                continue  # refused when the meter was saved; cannot happen for stored meters
        return cls(entity.id, {k: frozenset(v) for k, v in by_category.items()}, derived)


def _fail(index: int, field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"measurements[{index}].{field}: {problem}", param=f"measurements[{index}].{field}")


def to_micros(value: Decimal) -> int:
    return int((value * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


def _number(index: int, category: str, code: str, raw: Any) -> Decimal:
    kind = type(raw)
    if kind is int:
        # The common case, exact as it comes: no text round trip.
        if -MAX_ABS_INT <= raw <= MAX_ABS_INT:
            return Decimal(raw)
    elif kind is float:
        value = Decimal(repr(raw))  # repr is always Decimal-readable, 'nan' and 'inf' included
        if value.is_finite() and abs(value) <= MAX_ABS_VALUE:
            return value
    else:
        raise _fail(index, f"{category}.{code}", "must be a number")
    raise _fail(index, f"{category}.{code}", f"must be a finite number of magnitude at most {MAX_ABS_VALUE:f}")


def _timestamp(index: int, field: str, raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise _fail(index, field, "must be an ISO 8601 timestamp")
    # Fast path for the usual '...Z' / offset form; anything else takes the
    # general parser, which also words the error.
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        pass
    else:
        if value.tzinfo is not UTC:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if schemas.MIN_YEAR <= value.year <= schemas.MAX_YEAR:
            return value
    try:
        return schemas.utc_timestamp(raw)
    except ValueError as exc:
        raise _fail(index, field, str(exc)) from None


@dataclass(slots=True)
class ParsedMeasurement:
    uid: str
    meter: MeterSchema
    account_code: str
    ts: datetime
    ets: datetime | None
    dimensions: dict[str, str]
    micros: dict[str, int]


def parse_batch(session: Session, org_id: str, payload: Any) -> list[ParsedMeasurement]:
    if not isinstance(payload, dict) or set(payload) != {"measurements"}:
        raise InvalidInput("body must be an object with exactly one key, measurements", param="measurements")
    items = payload["measurements"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_MEASUREMENTS:
        raise InvalidInput(f"measurements must be a list of 1 to {MAX_MEASUREMENTS} items", param="measurements")
    meters = load_meters(session, org_id, items)
    return [parse_measurement(index, item, meters) for index, item in enumerate(items)]


def load_meters(session: Session, org_id: str, items: Sequence[Any]) -> dict[str, MeterSchema]:
    """The meters the items name, by code (one query)."""
    return _meters_by_code(session, org_id, {
        m["meter"] for m in items if isinstance(m, dict) and isinstance(m.get("meter"), str)})


# Parsed meters by (id, version): a batch reads its meters' rows, but their documents are
# validated once per version, not once per batch.
_meter_schemas: dict[tuple[str, int], MeterSchema] = {}


def _meters_by_code(session: Session, org_id: str, codes: set[str]) -> dict[str, MeterSchema]:
    """The meters by code: their versions read on every batch, their documents once per version."""
    in_org = (ConfigEntity.organization_id == org_id, ConfigEntity.kind == "meter")
    while True:
        versions = [(code, (id_, version)) for code, id_, version in session.execute(
            select(ConfigEntity.unique_key, ConfigEntity.id, ConfigEntity.version).where(
                *in_org, one_of(session, ConfigEntity.unique_key, codes)))
            if code is not None]  # matched by the IN, so never None; narrows the nullable column's type
        missing = [key[0] for _, key in versions if key not in _meter_schemas]
        if not missing:
            return {code: _meter_schemas[key] for code, key in versions}
        if len(_meter_schemas) > 10_000:
            _meter_schemas.clear()
        for entity in session.scalars(select(ConfigEntity).where(*in_org, ConfigEntity.id.in_(missing))):
            _meter_schemas[entity.id, entity.version] = MeterSchema.of(entity)
        # Read the versions again: a meter updated between the two reads is cached at its new version.


def parse_measurement(index: int, item: Any, meters: Mapping[str, MeterSchema]) -> ParsedMeasurement:
    # Text with NUL is refused here: PostgreSQL text cannot hold it, and the batch
    # would otherwise fail in the database (a 500) instead of naming the field.
    if not isinstance(item, dict):
        raise InvalidInput(f"measurements[{index}]: must be an object", param=f"measurements[{index}]")
    if not ALLOWED_KEYS.issuperset(item):
        raise _fail(index, sorted(set(item) - ALLOWED_KEYS)[0], "unknown field")
    meter_code = item.get("meter")
    meter = meters.get(meter_code) if isinstance(meter_code, str) else None
    if meter is None:
        raise _fail(index, "meter", f"no meter with code {meter_code!r}")
    account = item.get("account")
    if not isinstance(account, str) or not 1 <= len(account) <= 200 or "\x00" in account:
        raise _fail(index, "account", "must be an account code of 1 to 200 characters, without NUL")
    if "ts" not in item:
        raise _fail(index, "ts", "is required")
    ts = _timestamp(index, "ts", item["ts"])
    ets = _timestamp(index, "ets", item["ets"]) if item.get("ets") is not None else None
    uid = item.get("uid")
    if uid is None:
        uid = str(uuid.uuid4())
    elif not isinstance(uid, str) or not 1 <= len(uid) <= 200 or "\x00" in uid:
        raise _fail(index, "uid", "must be a string of 1 to 200 characters, without NUL")

    dimensions: dict[str, str] = {}
    measures: dict[str, Decimal] = {}
    for category in _CATEGORIES:
        values = item.get(category)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise _fail(index, category, "must be an object of field code to value")
        allowed = meter.fields_by_category.get(category, frozenset())
        for code, raw in values.items():
            if code not in allowed:
                raise _fail(index, f"{category}.{code}", f"meter {meter_code} has no {category.upper()} field {code}")
            if category in NUMERIC_CATEGORIES:
                measures[code] = _number(index, category, code, raw)
            elif isinstance(raw, str) and len(raw) <= 500 and "\x00" not in raw:
                dimensions[code] = raw
            else:
                raise _fail(index, f"{category}.{code}", "must be a string of at most 500 characters, without NUL")
    if not dimensions and not measures:
        # Nothing to bill or group by: storing it would only take the uid, so a corrected
        # resend of the same measurement would then be dropped as a replay.
        raise InvalidInput(f"measurements[{index}]: carries no data field; name at least one field of meter "
                           f"{meter_code} under its category (e.g. measure)", param=f"measurements[{index}]")
    return ParsedMeasurement(uid, meter, account, ts, ets, dimensions, _with_derived(index, meter, measures))


def _with_derived(index: int, meter: MeterSchema, measures: dict[str, Decimal]) -> dict[str, int]:
    """The measures with the meter's derived fields computed from them, in millionths."""
    for code, expression in meter.derived.items():
        try:
            value = evaluate(expression, measures)
        except CalculationError as exc:
            raise _fail(index, code, f"derived field cannot be computed: {exc}") from None
        if value is not None:
            # Stored in millionths as a 64-bit integer, like the fields it is computed from.
            if abs(value) > MAX_ABS_VALUE:
                raise _fail(index, code, f"derived value must be of magnitude at most {MAX_ABS_VALUE:f}")
            measures[code] = value
    return {code: to_micros(value) for code, value in measures.items()}


class _Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A measurement as the fast path decodes it: field names and types checked in C.
    (Untracked by the garbage collector: it refers to strings and dicts of strings and numbers
    only, so it can be in no cycle, and a batch's thousand of them cost the collector nothing.)"""

    meter: str
    account: str
    ts: str
    uid: str | None = None
    ets: str | None = None
    who: dict[str, str] | None = None
    where: dict[str, str] | None = None
    what: dict[str, str] | None = None
    other: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    measure: dict[str, int | float] | None = None
    income: dict[str, int | float] | None = None
    cost: dict[str, int | float] | None = None


class _WireBatch(msgspec.Struct, forbid_unknown_fields=True):
    measurements: list[_Wire]


_decode_wire = msgspec.json.Decoder(_WireBatch).decode


class _Refused(Exception):
    """The fast path cannot accept a measurement as it is; `parse_batch` says why."""


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A request body's measurements, validated and ready to store once `new_accounts` exist: as the store
    takes them from Python, or as the typed decoder wrote them again (`_typed_batch`)."""

    measurements: list[NewMeasurement] | EncodedBatch
    # Account codes no account has yet, each with the id of the skeleton account the measurements name.
    new_accounts: Mapping[str, str]


# Meters' and accounts' ids (and meters' versions) by code, for an organization: one statement per dialect,
# built once (see `in_bound`).
_BY_CODE: dict[str, Select[str, str | None, str, int]] = {}


def _by_code_statement(dialect: str) -> Select[str, str | None, str, int]:
    entity = ConfigEntity
    return select(entity.kind, entity.unique_key, entity.id, entity.version).where(
        entity.organization_id == bindparam("org"),
        or_(and_(entity.kind == "meter", in_bound(dialect, entity.unique_key, "meters")),
            and_(entity.kind == "account", in_bound(dialect, entity.unique_key, "accounts"))))


class _Codes:
    """The meters and accounts read by code in one read of the main database, kept for the bodies validated
    in it together (`_decode_each`): each code is looked up once, not once per body. Codes found absent
    are asked again (a body naming them takes the slow path anyway, or creates the accounts)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._meters: dict[tuple[str, str], MeterSchema] = {}
        self._accounts: dict[tuple[str, str], str] = {}

    def look_up(self, org_id: str, meters: set[str], accounts: set[str]) -> None:
        """The meters and accounts of these codes not yet looked up, in one statement (see `_BY_CODE`): a
        meter whose document is cached at the version read needs nothing more."""
        meters = {code for code in meters if (org_id, code) not in self._meters}
        accounts = {code for code in accounts if (org_id, code) not in self._accounts}
        if not meters and not accounts:
            return
        dialect = self.session.get_bind().dialect.name
        statement = _BY_CODE.get(dialect)
        if statement is None:
            statement = _BY_CODE[dialect] = _by_code_statement(dialect)
        found = self.session.connection().execute(statement, {
            "org": org_id, "meters": bound_values(dialect, meters), "accounts": bound_values(dialect, accounts)})
        for kind, code, entity_id, version in found:
            if code is None:  # matched by code, so never; narrows the nullable column's type
                continue
            if kind == "account":
                self._accounts[org_id, code] = entity_id
            elif (schema := _meter_schemas.get((entity_id, version))) is not None:
                self._meters[org_id, code] = schema  # otherwise `meters` reads the document

    def meters(self, org_id: str, codes: set[str]) -> dict[str, MeterSchema]:
        missing = {code for code in codes if (org_id, code) not in self._meters}
        if missing:
            self._meters.update(((org_id, code), meter)
                                for code, meter in _meters_by_code(self.session, org_id, missing).items())
        return {code: meter for code in codes if (meter := self._meters.get((org_id, code))) is not None}

    def account_ids_to_be(self, org_id: str, codes: set[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Account ids by code, reading only: the known accounts' ids, and for unknown codes the ids of the
        skeleton accounts storing the batch will create (returned apart too)."""
        missing = {code for code in codes if (org_id, code) not in self._accounts}
        if missing:
            self._accounts.update(((org_id, code), account_id)
                                  for code, account_id in _known_account_ids(self.session, org_id, missing).items())
        known = {code: account_id for code in codes if (account_id := self._accounts.get((org_id, code))) is not None}
        new = {code: skeleton_account_id(org_id, code) for code in codes if code not in known}
        return known | new, new


def decode_batch(session: Session, org_id: str, body: bytes, codes: _Codes | None = None,
                 encoded: bool = False) -> DecodedBatch:
    """The request body's measurements, validated (`codes`: what the same read already looked up), as an
    `EncodedBatch` where the typed decoder accepts them if `encoded` (the store takes that).

    Ingest's hot path: msgspec decodes the body and checks its shape and types in one pass of
    C, then each measurement gets only the checks that need its meter, and becomes what the store
    takes in the same step. Anything it cannot accept as it is (a wrong type, an unknown field, a
    bad value) goes through `parse_batch`, which holds the rules too and words the error, so a
    refusal reads the same either way. With `encoded`, the typed decoder comes first, and the
    meters of a body it could not take are learned for the next.
    """
    codes = codes or _Codes(session)
    if encoded:
        typed = _typed_batch(org_id, body, codes)
        if typed is not None:
            _BATCHES.labels("typed").inc()
            return typed
    try:
        # JSON writes NUL only as \u0000: a body without it has no NUL in any text, which the fast path
        # then needs to check nowhere (PostgreSQL text cannot hold NUL: the slow path refuses it by name).
        items = [] if _JSON_NUL in body else _decode_wire(body).measurements
    except msgspec.DecodeError:
        items = []
    if 1 <= len(items) <= MAX_MEASUREMENTS:
        meter_codes = {item.meter for item in items}
        # Codes too long for an account code are left for `_accept` to refuse.
        account_codes = {item.account for item in items if 1 <= len(item.account) <= 200}
        codes.look_up(org_id, meter_codes, account_codes)
        meters = codes.meters(org_id, meter_codes)
        accounts, new = codes.account_ids_to_be(org_id, account_codes)
        try:
            accepted = DecodedBatch([_accept(item, meters, accounts) for item in items], new)
        except (_Refused, InvalidInput):
            pass
        else:
            if encoded:
                _learn(org_id, meters)
            _BATCHES.labels("python").inc()
            return accepted
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("request body is not valid JSON") from None
    parsed = parse_batch(session, org_id, payload)
    accounts, new = codes.account_ids_to_be(org_id, {m.account_code for m in parsed})
    _BATCHES.labels("full").inc()
    return DecodedBatch(_new_measurements(parsed, accounts), new)


# -- the typed decoder: a body's measurements checked against their meters in C ------------------------------

_BATCHES = Counter("meterbill_ingest_batches_total", "Measurement batches accepted, by the path that validated them: "
                   "typed (the meters' own types, in C), python (a generic decode, then checks per measurement), "
                   "full (anything else, e.g. a value to convert)", ["validation"])
_Code = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_TextValue = Annotated[str, msgspec.Meta(max_length=500)]
_Units = Annotated[int, msgspec.Meta(ge=-MAX_ABS_INT, le=MAX_ABS_INT)]
# Years that no offset can move out of MIN_YEAR..MAX_YEAR: a time in the first or last year takes the other path.
_SAFE_YEARS = range(schemas.MIN_YEAR + 1, schemas.MAX_YEAR)
# More than six digits of a second: msgspec rounds them to the microsecond, `_timestamp` cuts them off.
_LONG_FRACTION = re.compile(rb"\.\d{7}")


class _NoMeter(msgspec.Struct, tag_field="meter", tag="", forbid_unknown_fields=True):
    """In every union of measurement types: a lone tagged type would take a measurement without `meter`,
    and no meter's code is empty, so a measurement decoded as this one is refused by the other paths."""


def _measurement_type(code: str, meter: MeterSchema) -> type | None:
    """The type that checks a measurement of this meter while msgspec decodes it, as `parse_measurement`
    checks it, for measurements whose numbers are integers (anything else fails to decode: the other paths
    take the body); None for a meter with derived fields (computed in Python from exact values)."""
    if meter.derived:
        return None
    categories = [category for category in _CATEGORIES if meter.fields_by_category.get(category)]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("account", _Code), ("ts", datetime), ("uid", _Code | None, None), ("ets", datetime | None, None)]
    for category in categories:
        value = _Units if category in NUMERIC_CATEGORIES else _TextValue
        names: Any = Literal.__getitem__(tuple(sorted(meter.fields_by_category[category])))
        values: Any = dict[names, value]  # type: ignore[valid-type]
        if len(categories) == 1:  # its one category holds the data a measurement must carry
            fields.append((category, Annotated[values, msgspec.Meta(min_length=1)]))
        else:
            fields.append((category, values | None, None))
    namespace = {} if len(categories) == 1 else {"__post_init__": _carries_data(tuple(categories))}
    return msgspec.defstruct(f"Measurement_{code}", fields, tag_field="meter", tag=code, kw_only=True,
                             forbid_unknown_fields=True, omit_defaults=True, gc=False, namespace=namespace)


def _carries_data(categories: tuple[str, ...]) -> Callable[[Any], None]:
    """A measurement type's `__post_init__`: one of its categories holds a field."""
    def post_init(self: Any) -> None:
        for category in categories:
            if getattr(self, category):
                return
        raise ValueError("carries no data field")  # msgspec makes it a validation error: another path words it
    return post_init


class _TypedDecoder:
    """A decoder of request bodies whose measurements name these meters (by code)."""

    def __init__(self, meters: Mapping[str, MeterSchema]) -> None:
        self.meters = dict(meters)
        self.codes: dict[type, str] = {}
        for code, meter in meters.items():
            kind = _measurement_type(code, meter)
            if kind is not None:
                self.codes[kind] = code
        measurement: Any = Union.__getitem__((_NoMeter, *self.codes))
        batch = msgspec.defstruct("TypedBatch", [("measurements", Annotated[
            list[measurement], msgspec.Meta(min_length=1, max_length=MAX_MEASUREMENTS)])], forbid_unknown_fields=True)
        self.decode: Callable[[bytes], Any] = msgspec.json.Decoder(batch).decode


# By organization: the decoder of the meters its bodies named (each learned from a body the other paths took).
_typed_decoders: dict[str, _TypedDecoder] = {}
_MAX_TYPED_METERS = 256


def _learn(org_id: str, meters: Mapping[str, MeterSchema]) -> None:
    """Have the organization's decoder take these meters (as they are now) too."""
    known = _typed_decoders.get(org_id)
    if known is not None and all(known.meters.get(code) is meter for code, meter in meters.items()):
        return
    learned = {**known.meters, **meters} if known is not None and len(known.meters) < _MAX_TYPED_METERS else meters
    if len(_typed_decoders) > 10_000:
        _typed_decoders.clear()
    _typed_decoders[org_id] = _TypedDecoder(learned)


def _typed_batch(org_id: str, body: bytes, codes: _Codes) -> DecodedBatch | None:
    """The body as an `EncodedBatch` if the organization's typed decoder takes it as it is, its meters
    unchanged since (None: the other paths decide). msgspec checks every field against its meter in C
    and writes the measurements again, with account ids put in; Python's part is a few steps per
    measurement that no type says (a year, a uid to make up, the account's id)."""
    decoder = _typed_decoders.get(org_id)
    if decoder is None or _JSON_NUL in body or (b"." in body and _LONG_FRACTION.search(body)):
        return None
    try:
        items = decoder.decode(body).measurements
    except msgspec.DecodeError:
        return None
    kinds = {type(item) for item in items}
    if _NoMeter in kinds:
        return None
    named = {decoder.codes[kind] for kind in kinds}
    account_codes = {item.account for item in items}
    codes.look_up(org_id, named, account_codes)
    current = codes.meters(org_id, named)
    if any(current.get(code) is not decoder.meters[code] for code in named):
        return None  # changed since the decoder was made: the other paths learn them as they are now
    accounts, new = codes.account_ids_to_be(org_id, account_codes)
    for item in items:
        if item.ts.year not in _SAFE_YEARS or (item.ets is not None and item.ets.year not in _SAFE_YEARS):
            return None
        if item.uid is None:
            item.uid = str(uuid.uuid4())
        item.account = accounts[item.account]
    return DecodedBatch(EncodedBatch(_encode(items), {code: current[code].id for code in named}), new)


_encode = msgspec.json.Encoder().encode


_JSON_NUL = b"\\u0000"
_from_iso = datetime.fromisoformat


def _fast_timestamp(raw: str) -> datetime:
    """The usual '...Z' or offset form, in UTC; anything else goes the slow path."""
    try:
        value = _from_iso(raw)
    except ValueError:
        raise _Refused from None
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not schemas.MIN_YEAR <= value.year <= schemas.MAX_YEAR:
        raise _Refused
    return value


def _accept(item: _Wire, meters: Mapping[str, MeterSchema], accounts: Mapping[str, str]) -> NewMeasurement:
    """One measurement of a body without NUL (see `decode_batch`), as the store takes it."""
    meter = meters.get(item.meter)
    account = accounts.get(item.account)
    if meter is None or account is None:
        raise _Refused
    uid = item.uid
    if uid is None:
        uid = str(uuid.uuid4())
    elif not 1 <= len(uid) <= 200:
        raise _Refused
    ts = _fast_timestamp(item.ts)
    ets = None if item.ets is None else _fast_timestamp(item.ets)
    allowed = meter.fields_by_category
    dimensions: dict[str, str] = {}
    for category in TEXT_CATEGORIES:
        values = getattr(item, category)
        if values is not None:
            if not allowed.get(category, _NONE).issuperset(values):
                raise _Refused
            for value in values.values():
                if len(value) > 500:
                    raise _Refused
            dimensions.update(values)
    micros: dict[str, int] = {}
    # The exact values only feed derived fields' formulas: not built for the meters without them.
    exact: dict[str, Decimal] = {}
    derived = bool(meter.derived)
    for category in NUMERIC_CATEGORIES:
        numbers = getattr(item, category)
        if numbers is not None:
            if not allowed.get(category, _NONE).issuperset(numbers):
                raise _Refused
            for code, raw in numbers.items():
                if type(raw) is int and -MAX_ABS_INT <= raw <= MAX_ABS_INT:
                    micros[code] = raw * MICROS_PER_UNIT  # exact, no Decimal needed
                    if derived:
                        exact[code] = Decimal(raw)
                else:
                    exact[code] = value = _number(0, category, code, raw)
                    micros[code] = to_micros(value)
    if not dimensions and not micros:
        raise _Refused
    if derived:
        micros = _with_derived(0, meter, exact)
    # Positional (uid, meter, account, ts, ets, dimensions, micros): a named tuple's keywords cost a third more.
    return NewMeasurement(uid, meter.id, account, ts, ets, dimensions, micros)


def submit(db: Database, org_id: str, body: bytes, count_new: bool = False) -> int | None:
    """The API's ingest: a request body's measurements, validated and acknowledged (durably, before
    this returns) or refused whole; how many were new, if known (see `MeasurementStore.land`; with
    `count_new`, always: the batch is then stored and deduplicated at once).

    The work is arranged so that concurrent requests do not queue on each other where they need not:

    - measurements in the main database, PostgreSQL: one transaction (writers do not wait on each other)
      that lands the batch whole;
    - SQLite: validation reads in a transaction of its own first, so the database's single write lock
      is not held while the batch is parsed;
    - measurements outside the main database (ClickHouse): the main database is only read (meters,
      accounts) and written for new skeleton accounts, committed first, and the batch then goes to the
      store outside any main-database transaction, so that concurrent batches meet in the store's
      grouped writes instead of one by one behind SQLite's write lock. Skeleton accounts' ids follow
      from their codes, so a crash between the two commits leaves at worst an account without
      measurements, which the client's resend uses.
    """
    store = outside_store()
    if store is not None:
        bound = store.bind(None)
        batch = _decode_in_turn(db, org_id, body, not count_new and bound.encoded_landing() is not None)
        if batch.new_accounts:
            with db.transaction() as session:
                batch = _with_new_accounts(session, org_id, body, batch)
        return _acknowledge(bound, org_id, batch, count_new)
    if db.dialect == "postgresql":
        with db.transaction() as session:
            return store_decoded(session, org_id, body, decode_batch(session, org_id, body), count_new)
    with db.read() as session:
        batch = decode_batch(session, org_id, body)
    with db.transaction() as session:
        return store_decoded(session, org_id, body, batch, count_new)


class _Decoding(Waiting):
    """A request body waiting for its validation (`_decode_in_turn`), and its measurements."""

    def __init__(self, db: Database, org_id: str, body: bytes, encoded: bool) -> None:
        super().__init__()
        self.db = db
        self.org_id = org_id
        self.body = body
        self.encoded = encoded
        self.batch: DecodedBatch | None = None


_decodings: list[_Decoding] = []
_decode_lock = threading.Lock()
_decodings_lock = threading.Lock()


def _decode_in_turn(db: Database, org_id: str, body: bytes, encoded: bool) -> DecodedBatch:
    """`decode_batch` for a store outside the main database, one request at a time: the thread that
    finds no validation running validates every body queued by then, in one read, while the others
    wait (without the GIL). Eight threads validating at once got through 146,000 measurements a
    second in one process, the same work in turn 246,000: contending for the GIL cost more than the
    work. Each body is still validated, refused or accepted on its own. (In the main database a
    body is validated in its request's own transaction, which this would have to share.)"""
    job = _Decoding(db, org_id, body, encoded)
    run_grouped(job, _decodings, _decode_lock, _decodings_lock, _decode_each)
    assert job.batch is not None  # set unless an error was raised
    return job.batch


def _decode_each(jobs: list[_Decoding]) -> None:
    for db in {id(job.db): job.db for job in jobs}.values():
        with db.read() as session:
            codes = _Codes(session)
            for job in jobs:
                if job.db is db:
                    try:
                        job.batch = decode_batch(session, job.org_id, job.body, codes, job.encoded)
                    except InvalidInput as exc:  # this body's refusal; the others go on
                        job.error = exc


def store_decoded(session: Session, org_id: str, body: bytes, batch: DecodedBatch,
                  count_new: bool = False) -> int | None:
    """Acknowledge a decoded body's measurements in the measurement store, in this unit of work, with
    the skeleton accounts they name; how many measurements were new, if known (always with `count_new`)."""
    return _acknowledge(store_for(session), org_id, _with_new_accounts(session, org_id, body, batch), count_new)


def _acknowledge(store: MeasurementStore, org_id: str, batch: DecodedBatch, count_new: bool) -> int | None:
    """Landed (the store may deduplicate later), or with `count_new` stored and deduplicated at once."""
    measurements = batch.measurements
    if isinstance(measurements, EncodedBatch):
        landing = store.encoded_landing()
        assert landing is not None and not count_new  # decoded so only for such a store (see `submit`)
        landing.land_encoded(org_id, measurements)
        return None
    return store.ingest(org_id, measurements).stored if count_new else store.land(org_id, measurements)


def _with_new_accounts(session: Session, org_id: str, body: bytes, batch: DecodedBatch) -> DecodedBatch:
    """The batch, once the skeleton accounts it names exist. Should a request have created an account
    under one of those codes meanwhile (under an id of its own), the body is read again: every code
    is known then."""
    if not batch.new_accounts:
        return batch
    if _create_skeletons(session, org_id, set(batch.new_accounts)) == batch.new_accounts:
        return batch
    return decode_batch(session, org_id, body, encoded=isinstance(batch.measurements, EncodedBatch))


def store_batch(session: Session, org_id: str, batch: Sequence[ParsedMeasurement]) -> int:
    """Store what is new in the measurement store, in this unit of work; returns how many
    measurements were new.

    Unknown account codes become skeleton accounts in the same transaction, so a batch's
    accounts and measurements are committed together.
    """
    accounts = _account_ids(session, org_id, {m.account_code for m in batch})
    return store_for(session).ingest(org_id, _new_measurements(batch, accounts)).stored


def _new_measurements(batch: Sequence[ParsedMeasurement], accounts: Mapping[str, str]) -> list[NewMeasurement]:
    # Positional (uid, meter, account, ts, ets, dimensions, micros): a named tuple's keywords cost a third more.
    return [NewMeasurement(m.uid, m.meter.id, accounts[m.account_code], m.ts, m.ets, m.dimensions, m.micros)
            for m in batch]


# Skeleton accounts' ids follow from (organization, code). With a measurement store outside the
# main database (ClickHouse), a crash between the store's write and the main commit leaves stored
# measurements whose skeleton account was never committed; the client's resend must then create
# the account under the same id, or those measurements (now duplicates) would name a lost account.
_SKELETON_NAMESPACE = uuid.UUID("6d657465-7262-696c-6c2d-736b656c6574")


def skeleton_account_id(org_id: str, code: str) -> str:
    return str(uuid.uuid5(_SKELETON_NAMESPACE, f"{org_id}/{code}"))


def _known_account_ids(session: Session, org_id: str, codes: set[str]) -> dict[str, str]:
    """The ids of the accounts these codes name, by code (unknown codes left out)."""
    return {
        code: account_id
        for code, account_id in session.execute(
            select(ConfigEntity.unique_key, ConfigEntity.id).where(
                ConfigEntity.organization_id == org_id,
                ConfigEntity.kind == "account",
                one_of(session, ConfigEntity.unique_key, codes),
            )
        )
        if code is not None  # matched by the IN, so always; narrows the nullable column's type
    }


def _account_ids(session: Session, org_id: str, codes: set[str]) -> dict[str, str]:
    """Account ids by code; unknown codes get a skeleton account, as m3ter does."""
    found = _known_account_ids(session, org_id, codes)
    missing = codes - set(found)
    return found | _create_skeletons(session, org_id, missing) if missing else found


def _create_skeletons(session: Session, org_id: str, codes: set[str]) -> dict[str, str]:
    """Skeleton accounts for codes no account had; the ids of the accounts now under those codes.

    Concurrent batches often name the same new codes: each inserts the skeletons it lacks with
    `ON CONFLICT DO NOTHING`, which waits for a concurrent transaction creating the same row and
    then leaves that row be, so the look-up after it finds every account, whoever created it (an
    account the API created under that code in the meantime included)."""
    now = utcnow()
    insert_new(session, ConfigEntity, [{
        "id": skeleton_account_id(org_id, code), "organization_id": org_id, "kind": "account", "unique_key": code,
        "version": 1, "document": {"code": code, "name": code, "emailAddress": SKELETON_EMAIL},
        "created_by": "ingest", "last_modified_by": "ingest", "created_at": now, "modified_at": now,
    } for code in sorted(codes)])
    return _known_account_ids(session, org_id, codes)
