"""Export stored sessions as training data: one exporter, one module per format.

:func:`export` (in :mod:`.exporter`) chooses the sessions, rebuilds their conversations, copies
their images and writes the files; each format (:mod:`.cota_mantis`, :mod:`.cota_llava`) only
turns one session into one row. :data:`FORMATS` (in :mod:`.formats`) names them all.
"""

from taco_app.store.export.base import DATASET, ExportFormat, Sample
from taco_app.store.export.exporter import LICENCE, ExportResult, export, parse_since
from taco_app.store.export.formats import FORMATS
from taco_app.store.queries import RATINGS

__all__ = ["DATASET", "FORMATS", "LICENCE", "RATINGS", "ExportFormat", "ExportResult", "Sample", "export", "parse_since"]
