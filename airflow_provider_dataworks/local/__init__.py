"""The local stack: a real Kafka broker, the DataWorks emulator, and the dataworks-local CLI."""
