"""The example pipelines that ``pipeline demo`` runs: video (``pipeline.examples.video``) and
orders (``pipeline.examples.orders``), with their Avro schemas in ``SCHEMAS_DIR``.

They ship inside the package so the demo works from an installed wheel; the repository's
``stages/`` re-exports them, so ``pipeline run stages.video`` in a checkout runs the same code.
Not part of the public API.
"""

from pathlib import Path

SCHEMAS_DIR = Path(__file__).parent / "schemas"
