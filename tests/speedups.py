"""Making an app per test cheap: what every app compiled afresh, compiled once per test process instead.

Each test gets an app of its own (its own database, settings and state), as before; these only share what is a pure
function of the code (URL builders, compiled templates, compiled SQL). They change how fast, never what, a test runs.
"""
from __future__ import annotations


def share_url_builders() -> None:
    """Compile each URL rule's builder functions once per process instead of once per app.

    Werkzeug compiles two Python functions for every rule of every app: ~85 % of create_app's time, and the suite
    builds well over a thousand apps with the same rules. A builder is a pure function of the rule's text, parsed
    parts and defaults (it reaches the rule's converters through its `self` argument), so apps can share them.
    """
    from werkzeug.routing.rules import Rule

    compile_builder = Rule._compile_builder
    builders: dict = {}

    def shared(self, append_unknown: bool = True):
        try:
            key = (self.rule, tuple(self._trace), repr(self.defaults), append_unknown)
            return builders[key]
        except KeyError:
            builders[key] = compile_builder(self, append_unknown)
            return builders[key]
        except (AttributeError, TypeError):  # a Werkzeug whose rules look different: compile as it does
            return compile_builder(self, append_unknown)

    Rule._compile_builder = shared


def share_compiled_templates() -> None:
    """Compile each Jinja template once per process instead of once per app (every app has its own environment).

    Jinja's bytecode cache is made for this: the compiled module is a function of the template's source (the
    bucket key holds its checksum) and the environment's settings, which are the same for every app of the suite.
    """
    import flask
    from jinja2 import BytecodeCache

    class MemoryBytecodeCache(BytecodeCache):
        def __init__(self):
            self.compiled: dict[str, bytes] = {}

        def load_bytecode(self, bucket) -> None:
            if bucket.key in self.compiled:
                bucket.bytecode_from_string(self.compiled[bucket.key])

        def dump_bytecode(self, bucket) -> None:
            self.compiled[bucket.key] = bucket.bytecode_to_string()

    flask.Flask.jinja_options = {**flask.Flask.jinja_options, "bytecode_cache": MemoryBytecodeCache()}


def share_compiled_statements() -> None:
    """One SQLAlchemy compiled-statement cache for every app's engine, as one engine has in production.

    SQLAlchemy caches a statement's compiled SQL per engine, keyed by the dialect object; every test's app has an
    engine of its own, so each test compiled every statement it ran afresh (a third of the CPU time of tests that
    use an app). Engines of one kind here differ only in their URL, so the dialect is keyed by what shapes the SQL.
    """
    import flask_sqlalchemy
    from sqlalchemy.util import LRUCache

    class SharedCompiledCache(LRUCache):
        @staticmethod
        def _key(key):
            d = key[0]
            kind = (type(d), d.paramstyle, d.server_version_info, d.label_length, d.max_identifier_length)
            return (kind, *key[1:])

        def get(self, key, default=None):
            return super().get(self._key(key), default)

        def __setitem__(self, key, value):
            super().__setitem__(self._key(key), value)

    cache = SharedCompiledCache(2000)  # SQLAlchemy's default per engine is 500
    make_engine = flask_sqlalchemy.SQLAlchemy._make_engine

    def make_sharing_engine(self, *args, **kwargs):
        engine = make_engine(self, *args, **kwargs)
        engine._compiled_cache = cache
        return engine

    flask_sqlalchemy.SQLAlchemy._make_engine = make_sharing_engine


def install() -> None:
    """All of the above, once per process."""
    share_url_builders()
    share_compiled_templates()
    share_compiled_statements()
