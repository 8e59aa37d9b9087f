"""SA-1B data: sample-data maker, validated TFRecord conversion, grain input pipeline."""
