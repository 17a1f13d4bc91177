"""EMR database (role emr-database): its service runs, listens on 5432 and answers a query.

The lab's stand-in answers HTTP on the database port; a real site would run e.g.
`psql -tAc 'select 1'` here instead (host.run executes on the database host itself)."""

QUERY = ("import urllib.request; "
         "print(urllib.request.urlopen('http://127.0.0.1:5432/', timeout=5).read().decode())")


def test_database_service_is_running_and_enabled(host):
    service = host.service("emr-db")
    assert service.is_running, "emr-db is not running"
    assert service.is_enabled, "emr-db would not start at the next boot"


def test_database_listens_on_5432(host):
    assert host.socket("tcp://0.0.0.0:5432").is_listening, "nothing listens on TCP 5432"


def test_database_answers_a_query(host):
    answer = host.run("python3 -c %s", QUERY)
    assert answer.rc == 0, f"the query failed: {answer.stderr.strip()[-200:]}"
    assert answer.stdout.strip() == f"emr-db on {host.check_output('hostname')}: ok", answer.stdout
