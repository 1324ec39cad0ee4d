-- Deploys every view in order. From this folder:
--   sqlcmd -S <workspace>-ondemand.sql.azuresynapse.net -d cqrs -G \
--     -v DeltaRoot="https://<account>.dfs.core.windows.net/<container>/delta" \
--        MasterKeyPassword="<password>" -i deploy.sql
:r 00_setup.sql
:r 10_raw_events.sql
:r 11_orders.sql
:r 12_customers.sql
:r 20_order_summary.sql
:r 21_daily_order_metrics.sql
:r 30_reference_views.sql
