"""Benchmarks of the DataWorks triggers against the Kafka provider's AwaitMessageTrigger."""
