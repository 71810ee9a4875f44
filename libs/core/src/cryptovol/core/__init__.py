"""cryptovol's pure core: message schemas, the Coinbase protocol, the features
engine and the labels. No I/O: no Kafka, no HTTP, no files; every stage and
training build on it."""
