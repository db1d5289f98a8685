"""Production entry point: `gunicorn --worker-class gthread --threads 8 -w 4 portal.wsgi:app`.

Web workers never run the scheduler; run exactly one `flask --app portal scheduler`
beside them. Threaded workers keep a held long-poll (`?wait=N`) from taking a whole
worker away from everyone else.
"""
from portal import create_app

app = create_app()
