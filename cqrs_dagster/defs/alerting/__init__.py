"""Alerting on read-model health: asset-check results and freshness states become alerts.

``sensor.py`` holds ``read_model_alerts_sensor``; ``dagster_state.py`` is the one module that reads
Dagster state through non-public instance methods; ``teams.py`` and ``slack.py`` are the sinks built
on dagster-msteams and dagster-slack; ``factory.py`` picks the sink that the settings name.
"""
