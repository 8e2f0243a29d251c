# SPDX-License-Identifier: GPL-2.0
#
# virtio-bufshare.
#
#   make KDIR=<kernel tree>   build the driver as an external module against a
#                             prepared Rust-enabled tree (see README.md)
#   make check                everything from cold, then every test
#   make fuzz                 run the fuzz targets of the host side, all at
#                             once, for FUZZ_TIME seconds (600; scripts/fuzz.sh)
#   make run                  boot a guest with the driver and show a round trip
#   make run-two              two guests: one draws, the other shows its frames
#                             through an import, without a copy
#   make series               the kernel side as an upstream series, checkpatch-clean
#
# Without KDIR, the module targets build against the project's own kernel
# tree (scripts/kernel.sh), inside its toolchain tree.

KDIR ?=

.PHONY: all modules clean toolchain kernel tools guest-programs check run run-two bench \
	rustfmtcheck clippy series fuzz

all: modules

ifneq ($(KDIR),)
modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules
clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean
else
modules:
	scripts/module.sh modules
clean:
	scripts/module.sh clean
endif

toolchain:
	scripts/toolchain.sh

kernel:
	scripts/kernel.sh

tools:
	scripts/tools.sh build

guest-programs: kernel
	scripts/guest-programs.sh

rustfmtcheck:
	scripts/module.sh rustfmtcheck
	scripts/tools.sh fmt

clippy:
	scripts/module.sh CLIPPY=1 modules
	scripts/tools.sh clippy

check:
	scripts/check.sh

fuzz:
	scripts/fuzz.sh run

run:
	scripts/run.sh

run-two:
	scripts/run2.sh

bench:
	scripts/bench.sh

series:
	scripts/series.sh
