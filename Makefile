.PHONY: setup demo test bench
setup:
	@bash scripts/setup.sh
demo: setup
	.venv/bin/wordcanvas demo --out demo
test: setup
	.venv/bin/python -m pytest -q
bench: setup
	.venv/bin/python -m pip install -q -e ".[dev,bench]"
	.venv/bin/python -m pip install -q --no-deps "pythae>=0.1.2"
