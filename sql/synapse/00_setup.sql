-- Synapse serverless SQL pool: credential and external data source for the cqrs-dagster Delta root.
-- Run inside the target database (see sql/README.md), with sqlcmd variables:
--   $(DeltaRoot)          the Delta root folder that CQRS_DELTA_ROOT points at, e.g.
--                         https://<account>.dfs.core.windows.net/<container>/delta
--   $(MasterKeyPassword)  password for the database master key (only used the first time)
-- The workspace's managed identity needs "Storage Blob Data Reader" on the storage account.

IF NOT EXISTS (SELECT 1 FROM sys.symmetric_keys WHERE name = '##MS_DatabaseMasterKey##')
    CREATE MASTER KEY ENCRYPTION BY PASSWORD = '$(MasterKeyPassword)';
GO

IF NOT EXISTS (SELECT 1 FROM sys.database_scoped_credentials WHERE name = 'cqrs_delta_identity')
    CREATE DATABASE SCOPED CREDENTIAL cqrs_delta_identity WITH IDENTITY = 'Managed Identity';
GO

-- Re-running the setup re-points the data source (the views name it, not the location).
IF EXISTS (SELECT 1 FROM sys.external_data_sources WHERE name = 'cqrs_delta')
    DROP EXTERNAL DATA SOURCE cqrs_delta;
GO

CREATE EXTERNAL DATA SOURCE cqrs_delta
WITH (
    LOCATION = '$(DeltaRoot)',
    CREDENTIAL = cqrs_delta_identity
);
GO
