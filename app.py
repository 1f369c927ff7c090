"""Entry point: `flask --app app run` for development, `python app.py` to serve with waitress."""
from promptproxy import create_app

app = create_app()

if __name__ == "__main__":
    from promptproxy.server import serve

    serve(app)
