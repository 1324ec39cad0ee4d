"""TEST INFRASTRUCTURE: a small in-memory Event Hubs AMQP 1.0 server for the azure-eventhub SDK.

Run it with ``python -m cqrs_dagster_tests.eventhubs_server --port PORT [--partitions N]``;
see README.md for what of the protocol it implements.
"""
