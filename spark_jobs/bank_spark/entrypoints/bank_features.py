"""spark-submit entry point of the features job (bank_spark.features); bank_spark travels in --py-files."""

import sys

from bank_spark.features import main

sys.exit(main())
