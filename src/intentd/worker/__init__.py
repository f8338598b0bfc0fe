"""The worker process: launches DBOS, listens on the recipes' queues, executes workflows."""
