"""Export stored sessions as training data: one exporter, one module per format.

:func:`export` (in :mod:`.exporter`) chooses the sessions, rebuilds their conversations (:mod:`.rebuild`:
clean targets only), copies their images and writes the files with a dataset card (:mod:`.card`);
each format (:mod:`.cota_mantis`, :mod:`.cota_llava`, …) only turns one session into one row, or,
when its rows pair sessions (:mod:`.trl_dpo`), the whole batch the filters chose into rows.
:data:`FORMATS` (in :mod:`.formats`) names them all.
"""

from taco_app.store.export.base import DATASET, Batch, ExportFormat, Left, Made, Sample
from taco_app.store.export.card import LICENCE, PROVENANCE
from taco_app.store.export.exporter import ExportResult, check_dataset_name, check_options, export, parse_since
from taco_app.store.export.formats import FORMATS
from taco_app.store.export.rebuild import REASONS
from taco_app.store.queries import RATINGS

__all__ = ["DATASET", "FORMATS", "LICENCE", "PROVENANCE", "RATINGS", "REASONS", "Batch", "ExportFormat", "ExportResult",
           "Left", "Made", "Sample", "check_dataset_name", "check_options", "export", "parse_since"]
