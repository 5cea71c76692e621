"Login sessions in a real redis-server: the store's contract (as SQLite keeps it), and two app processes sharing it"
import asyncio, os, re, shutil, subprocess, time
import httpx, pytest, redis
from fasthtml_oauth.sessions import SQLiteStore, RedisStore, LoginSessions
from fasthtml_oauth.devprovider import DevProvider
from conftest import free_port

@pytest.fixture(scope='module')
def redis_url(tmp_path_factory):
    "A redis-server of this module's own, on a loopback port, without persistence; stopped at the end"
    exe = shutil.which('redis-server') or '/usr/bin/redis-server'
    assert os.path.exists(exe), 'redis-server is missing: tests/setup.sh installs it'
    port = free_port()
    proc = subprocess.Popen([exe, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
                             '--dir', str(tmp_path_factory.mktemp('redis'))], stdout=subprocess.DEVNULL)
    url = f'redis://127.0.0.1:{port}/0'
    try:
        for _ in range(200):
            try:
                if redis.Redis.from_url(url).ping(): break
            except redis.ConnectionError: time.sleep(0.05)
        else: raise RuntimeError('redis-server did not start')
        yield url
    finally:
        proc.terminate()
        proc.wait(10)

@pytest.fixture(params=['sqlite', 'redis'])
def store(request, tmp_path):
    if request.param == 'sqlite': return SQLiteStore(str(tmp_path/'logins.db'))
    url = request.getfixturevalue('redis_url')
    return RedisStore(url, prefix=f'test-{os.urandom(4).hex()}:')  # each test its own keys

def test_store_contract(store):
    "Both stores: get, put with tags, find, pop, delete and expiry behave the same"
    async def main():
        await store.put('login', 'a1', dict(auth='ada'), 60, ['auth ada'])
        await store.put('login', 'a2', dict(auth='ada', n=2), 60, ['auth ada', 'sid op s1'])
        await store.put('login', 'b1', dict(auth='bob'), 60, ['auth bob'])
        assert await store.get('login', 'a2') == dict(auth='ada', n=2)
        assert await store.put('login', 'a2', dict(auth='eve'), 60, when='absent') is False  # taken: nothing written
        assert await store.put('login', 'new', dict(auth='eve'), 60, when='present') is False and await store.get('login', 'new') is None
        assert await store.put('login', 'a2', dict(auth='ada', n=3), 60, when='present') is True
        assert (await store.get('login', 'a2'))['n'] == 3
        assert await store.put('login', 'inf', dict(v=1), float('inf')) and await store.put('login', 'nan', dict(v=1), float('nan'))
        await store.put('jti', 'old', dict(v=1), -1, ['t old'])  # expired, maybe not yet purged: it is no record
        assert await store.put('jti', 'old', dict(v=2), 60, when='absent') is True and await store.get('jti', 'old') == dict(v=2)
        assert await store.find('jti', 't old') == {}  # and the expired record's tags went with it
        assert sorted(await store.find('login', 'auth ada')) == ['a1', 'a2']
        assert list(await store.find('login', 'sid op s1')) == ['a2']
        assert await store.get('other-kind', 'a1') is None
        assert await store.pop('login', 'a1') == dict(auth='ada')
        assert await store.pop('login', 'a1') is None
        assert list(await store.find('login', 'auth ada')) == ['a2']
        assert await store.delete('login', ['a2', 'missing']) == 1
        assert await store.find('login', 'auth ada') == {} and await store.delete('login', []) == 0
        await store.put('login', 'short', dict(auth='cy'), 0.05, ['auth cy'])
        assert await store.get('login', 'short') == dict(auth='cy')
        await asyncio.sleep(0.15)
        assert (await store.get('login', 'short'), await store.pop('login', 'short'), await store.find('login', 'auth cy')) == (None, None, {})
    asyncio.run(main())

def test_put_if_absent_has_one_winner(store):
    "Of 50 concurrent `put(..., when='absent')` of one key, exactly one writes (what makes a jti usable once)"
    async def main(): return await asyncio.gather(*[store.put('jti', 'k', dict(n=i), 60, when='absent') for i in range(50)])
    assert sum(asyncio.run(main())) == 1

def test_pop_has_one_winner(store):
    "Of 50 concurrent pops of one record, exactly one gets it (what makes a one-time value one-time)"
    async def main():
        await store.put('once', 'k', dict(v=1), 60)
        return await asyncio.gather(*[store.pop('once', 'k') for _ in range(50)])
    got = asyncio.run(main())
    assert [g for g in got if g] == [dict(v=1)]

def test_login_sessions_on_redis_expire_and_end(redis_url):
    async def main():
        ls = LoginSessions(RedisStore(redis_url, prefix='ls-test:'), ttl=0.3, touch=0)
        a, b = await ls.start('ada', agent='phone'), await ls.start('ada', agent='laptop')
        assert [r['agent'] for r in await ls.of('ada')] == ['laptop', 'phone']
        assert await ls.end(a, auth='bob') is False and await ls.end(a, auth='ada') is True
        assert (await ls.check(a, 'ada'), (await ls.check(b, 'ada'))['agent']) == (None, 'laptop')
        await asyncio.sleep(0.4)
        assert await ls.check(b, 'ada') is None and await ls.of('ada') == []
    asyncio.run(main())

def test_two_processes_share_logins_in_redis(serve, scaleout, redis_url):
    "Logged in through process A, a browser is let in by process B; logging out through A is refused by B at once"
    pport, a_port, b_port = free_port(), free_port(), free_port()
    dp = DevProvider(issuer=f'http://127.0.0.1:{pport}')
    dp.register('app', 'app-secret', [f'http://127.0.0.1:{a_port}/redirect'])
    serve(dp, port=pport)
    env = dict(APP_SECRET='shared-secret', ISSUER=dp.issuer, BASE_URL=f'http://127.0.0.1:{a_port}', STORE=redis_url)
    A, B = f'http://127.0.0.1:{a_port}', f'http://127.0.0.1:{b_port}'
    scaleout(a_port, NAME='A', **env); scaleout(b_port, NAME='B', **env)
    sub = dp.user_claims('ada@example.com')['sub']

    def log_in(b):
        link = re.search(r'href="(/redirect/start[^"]+)"', b.get(f'{A}/login').text)[1]
        res = b.get(dp.approve(b.get(A + link).headers['location'], 'ada@example.com'))
        assert (res.status_code, res.headers['location']) == (303, '/'), res.text[:300]

    with httpx.Client(follow_redirects=False, timeout=10) as phone, httpx.Client(follow_redirects=False, timeout=10) as laptop:
        log_in(phone)
        assert f'B:{sub}' in phone.get(f'{B}/account').text
        copy = httpx.Client(follow_redirects=False, timeout=10, cookies=phone.cookies)
        assert f'B:{sub}' in copy.get(f'{B}/account').text
        phone.post(f'{A}/logout')
        assert copy.get(f'{B}/account').headers['location'] == '/login'  # the copied cookie, refused by the other process
        log_in(phone); log_in(laptop)
        assert [b.get(f'{B}/account').status_code for b in (phone, laptop)] == [200, 200]
        assert 'id="ended">2<' in laptop.post(f'{B}/everywhere').text
        assert [b.get(f'{A}/account').headers.get('location') for b in (phone, laptop)] == ['/login', '/login']
        copy.close()

def test_processes_share_a_fresh_sqlite_file(tmp_path):
    "Six processes create one SQLite file at once and write to it (uvicorn's workers, parallel notebook runs): none fails"
    import subprocess, sys
    code = f"""
import asyncio
from fasthtml_oauth.sessions import LoginSessions, SQLiteStore
async def main():
    ls = LoginSessions(SQLiteStore({str(tmp_path/'logins.db')!r}))
    for _ in range(30): assert await ls.check(await ls.start('u'), 'u')
asyncio.run(main())
"""
    procs = [subprocess.Popen([sys.executable, '-c', code], stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(p.wait(60), p.stderr.read()[-500:]) for p in procs]
    assert all(rc == 0 for rc, _ in results), results

def test_a_store_opens_while_another_process_writes(tmp_path):
    """A process (a worker starting late) opens the SQLite file while another holds a write transaction for 0.5 s: it
    waits for the write and opens, rather than failing at the open-time `pragma optimize` after 100 ms"""
    import subprocess, sys
    path = str(tmp_path / 'logins.db')
    asyncio.run(SQLiteStore(path).put('login', 'x', dict(auth='ada'), ttl=60))
    holder = subprocess.Popen([sys.executable, '-c', f"""
import apsw, time
c = apsw.Connection({path!r})
c.execute("begin immediate"); c.execute("insert into oauth_items values ('login', 'y', '{{}}', 1e12)")
print('holding', flush=True); time.sleep(0.5); c.execute("commit")
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'holding'
        t0 = time.monotonic()
        store = SQLiteStore(path)
        assert 0.2 < time.monotonic() - t0 < 3
        assert asyncio.run(store.get('login', 'y')) == {} and asyncio.run(store.get('login', 'x')) == dict(auth='ada')
    finally: assert holder.wait(10) == 0

def test_a_login_ended_by_another_process_is_ended_at_the_next_check(tmp_path):
    """Logout everywhere across an app's workers: another process ends 40 logins one at a time, saying which after each
    commit; right after each, this process's check of that login (checked, and so read, just before) finds it ended,
    and the next one is still live. Any read cache put in front of the store has to keep this true"""
    import subprocess, sys
    path = str(tmp_path / 'logins.db')
    ls = LoginSessions(SQLiteStore(path))
    async def main():
        ids = [await ls.start(f'user{i}') for i in range(40)]
        for i, lid in enumerate(ids): assert await ls.check(lid, f'user{i}') and await ls.check(lid, f'user{i}')
        ender = subprocess.Popen([sys.executable, '-c', f"""
import asyncio, sys
from fasthtml_oauth.sessions import SQLiteStore
async def main():
    store = SQLiteStore({path!r})
    for line in sys.stdin:
        assert await store.delete('login', [line.strip()]) == 1
        print(line.strip(), flush=True)
asyncio.run(main())
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            for i, lid in enumerate(ids):
                assert await ls.check(lid, f'user{i}')  # kept
                ender.stdin.write(lid + '\n'); ender.stdin.flush()
                assert ender.stdout.readline().strip() == lid  # committed by the other process
                assert await ls.check(lid, f'user{i}') is None
                if i + 1 < len(ids): assert await ls.check(ids[i + 1], f'user{i + 1}')
        finally:
            ender.stdin.close()
            assert ender.wait(10) == 0
    asyncio.run(main())

def test_a_change_made_behind_the_stores_back_is_seen_within_a_second(tmp_path):
    """A process that writes the database without this library (raw SQL: no new bytes in the commits file) ends a
    login this process has read and kept: the next checks may still find it for up to a second, never longer"""
    import subprocess, sys
    path = str(tmp_path / 'logins.db')
    ls = LoginSessions(SQLiteStore(path))
    async def main():
        lid = await ls.start('ada')
        assert await ls.check(lid, 'ada')
        subprocess.run([sys.executable, '-c', f"import apsw; apsw.Connection({path!r}).execute("
                        f"\"delete from oauth_items where kind='login' and key='{lid}'\")"], check=True)
        t0 = time.monotonic()
        while await ls.check(lid, 'ada'): await asyncio.sleep(0.01)
        assert time.monotonic() - t0 < 1.5
    asyncio.run(main())

def test_the_store_finds_its_files_wherever_the_app_goes(tmp_path, monkeypatch):
    """A store opened with a relative path keeps using that database after the app changes directory (its checkpoints
    too, which run later), its commits file has the database's mode, and an in-memory store, named by a `Path` too,
    makes no file at all"""
    from pathlib import Path
    (tmp_path / 'app').mkdir(); (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path / 'app')
    old = os.umask(0o022)
    try: store = SQLiteStore('logins.db')
    finally: os.umask(old)
    os.chmod('logins.db', 0o664)
    assert asyncio.run(store.put('login', 'x', dict(auth='ada'), ttl=60))
    monkeypatch.chdir(tmp_path / 'elsewhere')
    busy, logged, copied = store._checkpoint()
    assert (busy, logged > 0, copied) == (0, True, logged) and os.listdir('.') == []
    again = SQLiteStore(str(tmp_path / 'app' / 'logins.db'))
    assert oct(os.stat(tmp_path / 'app' / 'logins.db-commits').st_mode & 0o777) == '0o664'
    assert asyncio.run(again.get('login', 'x')) == dict(auth='ada')
    for name in (':memory:', Path(':memory:')):
        mem = SQLiteStore(name)
        assert asyncio.run(mem.put('login', 'y', {}, ttl=60)) and asyncio.run(mem.get('login', 'y')) == {}
    assert os.listdir('.') == []
