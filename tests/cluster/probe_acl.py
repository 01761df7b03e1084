"""Run on a worker host: what the app user may do over the network. Connects as miStudio does
(REDIS_URL + REDIS_PASSWORD from the environment) and prints, as JSON, the answer to each
administrative command (refused or not) and to a client that sends no password."""

import json

import redis

from mistudio.redis.connection import get_client, resolve_endpoint

app = get_client("queue")
answers = {}
for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "dir"), ("KEYS", "*"), ("DEBUG", "SLEEP", "0"),
                ("SHUTDOWN", "NOSAVE"), ("MODULE", "LIST")):
    try:
        app.execute_command(*command)
        answers[command[0]] = "allowed"
    except redis.exceptions.NoPermissionError:
        answers[command[0]] = "refused"
options = dict(resolve_endpoint().options)
anonymous = redis.Redis(host=options["host"], port=options["port"], socket_connect_timeout=2)
try:
    anonymous.ping()
    answers["no password"] = "allowed"
except redis.exceptions.AuthenticationError:
    answers["no password"] = "refused"
answers["ping as app user"] = app.ping()
print(json.dumps(answers))
