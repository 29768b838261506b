-- sqlite3 workload for scripts/bench-preload.sh: indexed inserts, then
-- aggregate queries, in an in-memory database.
create table t(id integer primary key, name text, grp integer, score real);
create index t_name on t(name);
create index t_grp on t(grp, score);
with recursive c(i) as (select 1 union all select i + 1 from c where i < 500000)
insert into t select i, printf('name-%08d-%08x', i, (i * 2654435761) % 4294967296), i % 97, i * 0.5 from c;
select count(*), count(distinct grp), sum(length(name)) from t;
select grp, count(*), avg(score) from t group by grp order by grp limit 3;
