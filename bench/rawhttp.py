"""A small HTTP/1.1 keep-alive client on asyncio streams, for the load generator.

httpx costs a few hundred microseconds of CPU per request; on a 2-core machine that would make the load generator, not
the app, the bottleneck of the requests-per-second measures. This client sends pre-built requests over pooled
keep-alive connections and parses just what the benchmark needs (status, headers, body), at a few tens of microseconds.
Each `Browser` has its own cookie jar, so every simulated user has its own session; connections are shared."""
import asyncio, time
from urllib.parse import urlsplit, urljoin

class Response:
    __slots__ = ('status', 'headers', 'body', 'elapsed')
    def __init__(self, status, headers, body, elapsed): self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed
    def header(self, name, default=None):
        name = name.lower()
        return next((v for k, v in self.headers if k == name), default)
    @property
    def text(self): return self.body.decode('utf-8', 'replace')
    def __repr__(self): return f'<Response {self.status}>'

class _Conn:
    def __init__(self, reader, writer): self.reader, self.writer, self.used = reader, writer, False
    def close(self):
        try: self.writer.close()
        except Exception: pass

class Pool:
    "Keep-alive connections per (host, port), shared by every `Browser` using this pool"
    def __init__(self): self.idle = {}
    async def _get(self, hp):
        conns = self.idle.setdefault(hp, [])
        while conns:
            c = conns.pop()
            if not c.reader.at_eof(): return c
            c.close()
        r, w = await asyncio.open_connection(*hp, limit=1 << 20)
        return _Conn(r, w)

    def _put(self, hp, c): self.idle.setdefault(hp, []).append(c)

    async def request(self, method, url, headers=()) -> Response:
        u = urlsplit(url)
        hp = (u.hostname, u.port or 80)
        target = (u.path or '/') + (f'?{u.query}' if u.query else '')
        head = f'{method} {target} HTTP/1.1\r\nHost: {u.netloc}\r\n' + ''.join(f'{k}: {v}\r\n' for k, v in headers)
        data = (head + ('Content-Length: 0\r\n' if method == 'POST' else '') + '\r\n').encode('latin-1')
        for attempt in range(2):
            c = await self._get(hp)
            reused = c.used
            t0 = time.perf_counter()
            try:
                c.writer.write(data)
                status, hdrs, body, keep = await _read(c.reader, method)
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                c.close()
                if reused and attempt == 0 and getattr(e, 'partial', b'') == b'': continue  # the server closed an idle connection
                raise
            elapsed = time.perf_counter() - t0
            c.used = True
            if keep: self._put(hp, c)
            else: c.close()
            return Response(status, hdrs, body, elapsed)

    def close(self):
        for conns in self.idle.values():
            for c in conns: c.close()
        self.idle = {}

async def _read(reader, method):
    head = await reader.readuntil(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split(' ', 2)[1])
    hdrs = [(k.strip().lower(), v.strip()) for k, _, v in (l.partition(':') for l in lines[1:] if l)]
    h = dict(hdrs)
    if method == 'HEAD' or status in (204, 304) or 100 <= status < 200: body = b''
    elif 'content-length' in h: body = await reader.readexactly(int(h['content-length']))
    elif h.get('transfer-encoding', '').lower() == 'chunked':
        parts = []
        while True:
            size = int((await reader.readuntil(b'\r\n')).split(b';')[0], 16)
            if size == 0:
                while (await reader.readuntil(b'\r\n')) != b'\r\n': pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b''.join(parts)
    else:
        body = await reader.read()
        return status, hdrs, body, False
    return status, hdrs, body, h.get('connection', '').lower() != 'close'

class Browser:
    "One simulated user: its own cookies (by name; the benchmark uses one host per server), requests through a shared `Pool`"
    def __init__(self, pool:Pool): self.pool, self.jars, self.visited = pool, {}, []

    def cookie_header(self, url) -> str:
        jar = self.jars.get(urlsplit(url).netloc, {})
        return '; '.join(f'{k}={v}' for k, v in jar.items())

    async def get(self, url, headers=()) -> Response: return await self.request('GET', url, headers)

    async def request(self, method, url, headers=()) -> Response:
        ck = self.cookie_header(url)
        if len(self.visited) < 50: self.visited.append(url)  # enough to count the requests of one login
        res = await self.pool.request(method, url, list(headers) + ([('Cookie', ck)] if ck else []))
        jar = self.jars.setdefault(urlsplit(url).netloc, {})
        for k, v in res.headers:
            if k != 'set-cookie': continue
            nv, _, attrs = v.partition(';')
            name, _, val = nv.strip().partition('=')
            a = attrs.lower()
            if 'max-age=0' in a or 'expires=thu, 01 jan 1970' in a: jar.pop(name, None)
            else: jar[name] = val
        return res

    def absolute(self, base, location) -> str: return urljoin(base, location)
