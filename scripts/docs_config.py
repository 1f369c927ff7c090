"""Write the settings table of docs/configuration.md from the registry (promptproxy/settings.py).

    python scripts/docs_config.py            # rewrite the table between its markers (`make docs-config`)
    python scripts/docs_config.py --print    # print the table only
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "configuration.md"
sys.path.insert(0, str(ROOT))

from promptproxy.settings import markdown_table, splice  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Rewrite the table in docs/configuration.md (or print it); say whether the file changed."""
    parser = argparse.ArgumentParser(description="Write docs/configuration.md's settings table from the registry.")
    parser.add_argument("--print", action="store_true", help="print the table instead of writing the file")
    args = parser.parse_args(argv)
    if args.print:
        print(markdown_table())
        return 0
    text = DOCS.read_text(encoding="utf-8")
    new = splice(text)
    if new != text:
        DOCS.write_text(new, encoding="utf-8")
    print(f"{DOCS.relative_to(ROOT)}: {'updated' if new != text else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
