# Two commands matter: `make drill` (the whole rehearsal on the built-in lab) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_STAMP := /var/lib/orchestrator-lab/.system-packages
SYSTEM_PACKAGES := systemd-container debootstrap nftables iproute2 iputils-ping openssh-client chromium ruby rsyslog \
	golang-go golang-github-vmware-govmomi-dev ipmitool libvirt-dev pkg-config gcc python3-dev

.PHONY: setup system venv test test-unit test-lab lint deadcode drill bench bench-scale clean lab-up lab-down

setup: system venv

system: $(SYSTEM_STAMP)
$(SYSTEM_STAMP): Makefile
	@if [ "$$(id -u)" != 0 ]; then echo "make setup needs root for apt-get and the lab" >&2; exit 2; fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null
	mkdir -p $(dir $@) && touch $@

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: setup
	bash scripts/run-tests.sh

test-unit: venv
	$(BIN)/pytest -q tests/unit tests/contract

.PHONY: test-power
test-power: setup
	$(BIN)/pytest -q -p no:cacheprovider tests/power

test-lab: setup
	$(BIN)/pytest -q -p no:cacheprovider tests/adversarial tests/lab

lint: venv
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/mypy

# Unreferenced definitions (vulture); what is used by design or by tests only is listed in the whitelist.
deadcode: venv
	$(BIN)/vulture orchestrator scripts/vulture_whitelist.py --min-confidence 60 --ignore-decorators "@*.command,@*.group"

drill: setup
	$(BIN)/orchestrator drill inventories/lab.yml

bench: setup
	$(BIN)/python bench/run.py

bench-scale: setup  # not in CI (25-40 min here): `make bench`'s rounds on 100 hosts, then on 300 at the same depth
	$(BIN)/python bench/run.py --scale 300 --repeat 1 --no-ansible

lab-up: setup
	$(BIN)/orchestrator lab up inventories/lab.yml

lab-down: venv
	$(BIN)/orchestrator lab down inventories/lab.yml

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache .mypy_cache .ruff_cache
