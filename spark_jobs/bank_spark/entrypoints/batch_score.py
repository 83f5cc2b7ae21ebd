"""spark-submit entry point of the scoring job (bank_spark.batch_score_job); bank_spark travels in --py-files.

The job's functions are run from the shipped module, not from this __main__ one:
what executors unpickle must be importable by name (see batch_score._BatchScorer).
"""

import sys

from bank_spark.batch_score_job import main

sys.exit(main())
