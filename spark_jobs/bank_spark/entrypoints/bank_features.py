"""spark-submit entry point of the features job (bank_spark.features_job); bank_spark travels in --py-files."""

import sys

from bank_spark.features_job import main

sys.exit(main())
