# kc_flow: the extension (PGXS) and the gateway daemon.
#   make            build both
#   make install    install the extension into the server found by PG_CONFIG
#   make test       everything (installs what it needs, starts throwaway servers)
#   make run        the system with demo data
#   make run-fleet  the same on a fleet: failover Postgres, Redis, 3 gateways, HAProxy (TLS)
#   make bench      every benchmark, beside the machine's own limits (docs/benchmarks.md)

EXTENSION   = kc_flow
MODULE_big  = kc_flow
# the current version's install script is built from extension/schema/; older
# versions' install scripts are frozen, and upgrade scripts lead from them
DATA_built  = kc_flow--0.2.0.sql
DATA        = kc_flow--0.1.0.sql kc_flow--0.1.0--0.2.0.sql
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard extension/*.c)))
PG_CPPFLAGS = -Iextension
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

REGRESS      = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=btree_gist --dbname=kc_regress

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

kc_flow--0.2.0.sql: $(sort $(wildcard extension/schema/*.sql))
	cat $^ > $@

all: gateway
.PHONY: gateway test run run-fleet bench
gateway:
	@if [ -f gateway/Makefile ] && [ -z "$(NO_GATEWAY)" ]; then $(MAKE) -C gateway; fi

test:
	bash test/run.sh

run:
	bash scripts/run-demo.sh

run-fleet:
	bash scripts/run-fleet.sh

bench:
	bash bench/run_all.sh

.PHONY: soak
soak:
	bash test/faults/soak.sh

# kc_flow's storage under a held xmin horizon, beside the same run without (docs/benchmarks.md)
.PHONY: soak-horizon
soak-horizon:
	bash bench/soak/run.sh
