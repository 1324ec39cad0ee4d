-- customers (silver): one row per customer at its newest applied version.
-- Mirrors sql/synapse/12_customers.sql.
CREATE OR REPLACE VIEW customers AS
SELECT
    customer_id,
    name,
    email,
    created_date,
    updated_date,
    version,
    last_event_id
FROM _delta_customers;
