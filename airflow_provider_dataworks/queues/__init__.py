"""Queues of the DataWorks provider."""
