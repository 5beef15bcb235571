"""The names of a measurement's data categories and of the ingest answer's extension header.

Its own module, importing nothing, because the CLI's client commands (`meterbill ingest`) need
these names too, and a command line that imported the server's ingest code (SQLAlchemy's ORM,
FastAPI, the models) to read them would start seconds slower on every call.
"""

TEXT_CATEGORIES = ("who", "where", "what", "other", "metadata")
NUMERIC_CATEGORIES = ("measure", "income", "cost")
# A meterbill extension beside m3ter's `{"result": "accepted"}` (the SDK reads only the
# body): how many of the batch's measurements were new, the rest being replayed uids. Sent when it
# is known at once: always when the request asks for it with COUNT_NEW_HEADER (`meterbill ingest`
# does, to report new and already stored rows); otherwise not on PostgreSQL, which acknowledges a
# batch before it deduplicates it.
NEW_MEASUREMENTS_HEADER = "x-meterbill-new-measurements"
COUNT_NEW_HEADER = "x-meterbill-count-new"
