.PHONY: setup demo test bench
setup:
	@bash scripts/setup.sh
demo: setup
	.venv/bin/wordcanvas demo --out demo
test: setup
	.venv/bin/python -m pytest -q
