-- customers (silver): one row per customer at its newest applied version.
CREATE OR ALTER VIEW dbo.customers
AS
SELECT
    customer_id,
    name,
    email,
    created_date,
    updated_date,
    version,
    last_event_id
FROM OPENROWSET(
    BULK 'customers/',
    DATA_SOURCE = 'cqrs_delta',
    FORMAT = 'DELTA'
)
WITH (
    customer_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    name VARCHAR(400) COLLATE Latin1_General_100_BIN2_UTF8,
    email VARCHAR(320) COLLATE Latin1_General_100_BIN2_UTF8,
    created_date DATETIME2(6),
    updated_date DATETIME2(6),
    version BIGINT,
    last_event_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8
) AS r;
GO
