-- The extension installs into schema kc_flow with btree_gist, and documents itself.
CREATE EXTENSION kc_flow CASCADE;
SELECT extname, extversion FROM pg_extension WHERE extname IN ('kc_flow', 'btree_gist') ORDER BY 1;

-- every table and function carries a comment
SELECT c.relname AS table_without_comment
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'kc_flow' AND c.relkind = 'r' AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.proname AS function_without_comment
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'kc_flow' AND obj_description(p.oid, 'pg_proc') IS NULL
   AND p.prorettype <> 'trigger'::regtype;

SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'kc_flow' AND c.relkind = 'r' ORDER BY 1;

-- the configuration is there, with its defaults
SELECT name, setting, unit FROM pg_settings
 WHERE name LIKE 'kc\_flow.%' AND name NOT IN ('kc_flow.database', 'kc_flow.workers') ORDER BY name;

-- zone names: IANA only
SELECT z, kc_flow.is_iana_timezone(z)
  FROM unnest(ARRAY['Asia/Kolkata', 'America/Argentina/Salta', 'UTC', 'Etc/GMT+5', 'Europe/Nowhere',
                    'XYZ+3', 'UTC+3', '', '../etc/passwd', 'Asia//Kolkata', 'Asia/Kolkata/']) AS z;
