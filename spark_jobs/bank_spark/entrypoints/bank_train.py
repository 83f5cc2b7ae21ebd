"""spark-submit entry point of the model build (bank_spark.train_job); bank_spark and bank_ml travel in --py-files."""

import sys

from bank_spark.train_job import main

sys.exit(main())
