"""A Spark step in the shape of the book's chapter 6 example: the bank CSV from S3 to labelled parquet in S3.

    spark-submit spark_bank_step.py --input_path s3://BUCKET/bank.csv --output_path s3://BUCKET/results.parquet

As the book's script: the CSV read with a header and inferSchema, the label derived from
``y``, parquet written back; nothing of the bundle is imported (EMR runs it as it is).
"""

import argparse

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

parser = argparse.ArgumentParser()
parser.add_argument("--input_path", required=True)
parser.add_argument("--output_path", required=True)
args = parser.parse_args()

spark = SparkSession.builder.appName("bank-marketing-book-step").getOrCreate()
bank = spark.read.option("header", True).option("sep", ";").option("inferSchema", True).csv(args.input_path)
labelled = bank.withColumn("label", (F.col("y") == "yes").cast("int"))
labelled.write.mode("overwrite").parquet(args.output_path)
print(f"wrote {labelled.count()} rows to {args.output_path}")
spark.stop()
