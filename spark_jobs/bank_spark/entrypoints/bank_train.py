"""spark-submit entry point of the model build (bank_spark.train); bank_spark and bank_ml travel in --py-files."""

import sys

from bank_spark.train import main

sys.exit(main())
