//! Command execution: arguments in, one reply written out.
//!
//! Commands see their arguments through [`Args`], implemented both for
//! ranges of a borrowed input slice (the fast path: nothing copied unless
//! stored) and for owned `Bytes` (the incremental path: large values are
//! stored as the views the parser took, without a copy). Replies follow
//! Redis 7's wording, so clients and their error handling behave the same.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use ferropoll_linkbuffer::{LINK_MIN, LinkBuffer};

use super::parse::parse_i64;
use super::reply;
use super::store::{Store, Value, now_ms};

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on with the next command.
    Continue,
    /// `QUIT`: send what is written, then close.
    Quit,
}

/// The arguments of one command (the name is argument 0).
pub(crate) trait Args {
    /// Number of arguments, the name included.
    fn len(&self) -> usize;
    /// Argument `i` (`i < len()`).
    fn get(&self, i: usize) -> &[u8];
    /// Argument `i` as a value to store. Small values are copied — a view
    /// would keep a whole input node alive for a few bytes — and values of
    /// [`LINK_MIN`] bytes or more are kept as views where the input allows.
    fn value(&self, i: usize) -> Bytes;
}

/// Arguments as ranges of one borrowed command.
pub(crate) struct Borrowed<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) ranges: &'a [(usize, usize)],
}

impl Args for Borrowed<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.ranges.len()
    }
    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        let (o, l) = self.ranges[i];
        &self.buf[o..o + l]
    }
    #[inline]
    fn value(&self, i: usize) -> Bytes {
        Bytes::copy_from_slice(self.get(i))
    }
}

impl Args for [Bytes] {
    #[inline]
    fn len(&self) -> usize {
        <[Bytes]>::len(self)
    }
    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        &self[i]
    }
    #[inline]
    fn value(&self, i: usize) -> Bytes {
        if self[i].len() >= LINK_MIN {
            self[i].clone()
        } else {
            Bytes::copy_from_slice(&self[i])
        }
    }
}

const WRONGTYPE: &[u8] = b"WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INT: &[u8] = b"ERR value is not an integer or out of range";
const SYNTAX: &[u8] = b"ERR syntax error";

fn err(w: &mut LinkBuffer, msg: &[u8]) {
    reply::error(w, &[msg]);
}

fn wrong_arity(w: &mut LinkBuffer, name: &[u8]) {
    let lower: Vec<u8> = name
        .iter()
        .take(64)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    reply::error(
        w,
        &[b"ERR wrong number of arguments for '", &lower, b"' command"],
    );
}

/// Runs one command and writes its reply.
pub(crate) fn execute<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer) -> Flow {
    let raw = a.get(0);
    let mut upper = [0u8; 16];
    let name: &[u8] = if raw.len() <= upper.len() {
        for (d, s) in upper.iter_mut().zip(raw) {
            *d = s.to_ascii_uppercase();
        }
        &upper[..raw.len()]
    } else {
        b""
    };
    let n = a.len();
    // (exact arity, or minimum if negative), as Redis's command table.
    let arity: i32 = match name {
        b"GET" | b"INCR" | b"DECR" | b"STRLEN" | b"TTL" | b"PTTL" | b"LLEN" | b"ECHO"
        | b"PERSIST" | b"SELECT" => 2,
        b"INCRBY" | b"DECRBY" | b"APPEND" | b"EXPIRE" | b"PEXPIRE" => 3,
        b"LRANGE" => 4,
        b"SET" | b"LPUSH" | b"RPUSH" | b"MSET" => -3,
        b"DEL" | b"EXISTS" | b"MGET" | b"LPOP" | b"RPOP" | b"CONFIG" => -2,
        b"PING" | b"DBSIZE" | b"FLUSHDB" | b"FLUSHALL" | b"QUIT" | b"COMMAND" => -1,
        _ => {
            unknown(w, a);
            return Flow::Continue;
        }
    };
    if (arity > 0 && n != arity as usize) || (arity < 0 && n < (-arity) as usize) {
        wrong_arity(w, name);
        return Flow::Continue;
    }
    match name {
        b"PING" => match n {
            1 => reply::simple(w, b"PONG"),
            2 => reply::bulk(w, a.get(1)),
            _ => wrong_arity(w, name),
        },
        b"ECHO" => reply::bulk(w, a.get(1)),
        b"GET" => get(store, a.get(1), w),
        b"SET" => set(store, a, w),
        b"DEL" => del_exists(store, a, w, true),
        b"EXISTS" => del_exists(store, a, w, false),
        b"INCR" => incr_by(store, a.get(1), 1, w),
        b"DECR" => incr_by(store, a.get(1), -1, w),
        b"INCRBY" | b"DECRBY" => match parse_i64(a.get(2)) {
            Some(d) if name == b"INCRBY" => incr_by(store, a.get(1), d, w),
            Some(d) => match d.checked_neg() {
                Some(d) => incr_by(store, a.get(1), d, w),
                None => err(w, b"ERR decrement would overflow"),
            },
            None => err(w, NOT_INT),
        },
        b"MGET" => mget(store, a, w),
        b"MSET" => mset(store, a, w),
        b"APPEND" => append(store, a, w),
        b"STRLEN" => strlen(store, a.get(1), w),
        b"EXPIRE" | b"PEXPIRE" => expire(store, a, w, name == b"EXPIRE"),
        b"PERSIST" => {
            let mut sh = store.shard(a.get(1));
            let had = sh.get(a.get(1)).is_some_and(|e| e.expires_at != 0);
            if had {
                sh.set_expiry(a.get(1), 0);
            }
            reply::int(w, had as i64);
        }
        b"TTL" | b"PTTL" => ttl(store, a.get(1), w, name == b"TTL"),
        b"DBSIZE" => reply::int(w, store.len() as i64),
        b"FLUSHDB" | b"FLUSHALL" => {
            let mode_ok = n == 1
                || (n == 2
                    && (a.get(1).eq_ignore_ascii_case(b"ASYNC")
                        || a.get(1).eq_ignore_ascii_case(b"SYNC")));
            if mode_ok {
                store.clear();
                reply::ok(w);
            } else {
                err(w, SYNTAX);
            }
        }
        b"LPUSH" => push(store, a, w, true),
        b"RPUSH" => push(store, a, w, false),
        b"LPOP" => pop(store, a, w, true),
        b"RPOP" => pop(store, a, w, false),
        b"LRANGE" => lrange(store, a, w),
        b"LLEN" => {
            let mut sh = store.shard(a.get(1));
            match sh.get(a.get(1)).map(|e| &e.value) {
                None => reply::int(w, 0),
                Some(Value::List(l)) => reply::int(w, l.len() as i64),
                Some(_) => err(w, WRONGTYPE),
            }
        }
        b"SELECT" => match parse_i64(a.get(1)) {
            Some(0) => reply::ok(w),
            Some(_) => err(w, b"ERR DB index is out of range"),
            None => err(w, NOT_INT),
        },
        b"QUIT" => {
            reply::ok(w);
            return Flow::Quit;
        }
        b"COMMAND" => command(a, w),
        b"CONFIG" => config(a, w),
        _ => unknown(w, a),
    }
    Flow::Continue
}

fn unknown<A: Args + ?Sized>(w: &mut LinkBuffer, a: &A) {
    // Redis 7: "ERR unknown command 'x', with args beginning with: 'a' 'b' "
    let mut msg = Vec::with_capacity(96);
    msg.extend_from_slice(b"ERR unknown command '");
    msg.extend(a.get(0).iter().take(128));
    msg.extend_from_slice(b"', with args beginning with: ");
    for i in 1..a.len().min(8) {
        msg.push(b'\'');
        msg.extend(a.get(i).iter().take(128));
        msg.extend_from_slice(b"' ");
    }
    reply::error(w, &[&msg]);
}

fn get(store: &Store, key: &[u8], w: &mut LinkBuffer) {
    let mut sh = store.shard(key);
    match sh.get(key).map(|e| &e.value) {
        None => reply::nil(w),
        Some(Value::Str(b)) => reply::bulk_bytes(w, b),
        Some(Value::Int(i)) => reply::bulk_int(w, *i),
        Some(Value::List(_)) => err(w, WRONGTYPE),
    }
}

fn set<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer) {
    let (mut nx, mut xx, mut keep_ttl) = (false, false, false);
    let mut ttl_ms: Option<i64> = None;
    let mut i = 3;
    while i < a.len() {
        let opt = a.get(i);
        if opt.eq_ignore_ascii_case(b"NX") && !xx {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"XX") && !nx {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"KEEPTTL") && ttl_ms.is_none() {
            keep_ttl = true;
        } else if (opt.eq_ignore_ascii_case(b"EX") || opt.eq_ignore_ascii_case(b"PX"))
            && ttl_ms.is_none()
            && !keep_ttl
            && i + 1 < a.len()
        {
            let Some(v) = parse_i64(a.get(i + 1)) else {
                return err(w, NOT_INT);
            };
            let ms = if opt.eq_ignore_ascii_case(b"EX") {
                v.checked_mul(1000)
            } else {
                Some(v)
            };
            match ms {
                Some(ms) if v > 0 => ttl_ms = Some(ms),
                _ => return err(w, b"ERR invalid expire time in 'set' command"),
            }
            i += 1;
        } else {
            return err(w, SYNTAX);
        }
        i += 1;
    }
    let deadline = match ttl_ms {
        None => 0,
        Some(ms) => match now_ms().checked_add(ms as u64) {
            Some(d) => d,
            None => return err(w, b"ERR invalid expire time in 'set' command"),
        },
    };
    let key = a.get(1);
    let mut sh = store.shard(key);
    if nx || xx {
        let exists = sh.get(key).is_some();
        if exists == nx {
            return reply::nil(w);
        }
    }
    let value = Value::Str(a.value(2));
    if keep_ttl {
        sh.insert_keep_ttl(key, value);
    } else {
        sh.insert(key, value, deadline);
    }
    reply::ok(w);
}

fn del_exists<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer, delete: bool) {
    let mut count = 0i64;
    for i in 1..a.len() {
        let key = a.get(i);
        let mut sh = store.shard(key);
        let hit = if delete {
            sh.remove(key)
        } else {
            sh.get(key).is_some()
        };
        count += hit as i64;
    }
    reply::int(w, count);
}

/// The integer value of a string entry, or the reply to give instead.
fn as_int(v: &Value) -> Result<i64, &'static [u8]> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Str(b) => parse_i64(b).ok_or(NOT_INT),
        Value::List(_) => Err(WRONGTYPE),
    }
}

fn incr_by(store: &Store, key: &[u8], by: i64, w: &mut LinkBuffer) {
    let mut sh = store.shard(key);
    let e = sh.get_or_insert_with(key, || Value::Int(0));
    match as_int(&e.value) {
        Err(msg) => err(w, msg),
        Ok(old) => match old.checked_add(by) {
            None => err(w, b"ERR increment or decrement would overflow"),
            Some(new) => {
                e.value = Value::Int(new);
                reply::int(w, new);
            }
        },
    }
}

fn mget<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer) {
    let keys: Vec<&[u8]> = (1..a.len()).map(|i| a.get(i)).collect();
    let (mut guards, idx) = store.lock_many(&keys);
    reply::array(w, keys.len());
    for (key, &g) in keys.iter().zip(&idx) {
        match guards[g].get(key).map(|e| &e.value) {
            Some(Value::Str(b)) => reply::bulk_bytes(w, b),
            Some(Value::Int(i)) => reply::bulk_int(w, *i),
            _ => reply::nil(w),
        }
    }
}

fn mset<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer) {
    if a.len().is_multiple_of(2) {
        return wrong_arity(w, b"mset");
    }
    let keys: Vec<&[u8]> = (1..a.len()).step_by(2).map(|i| a.get(i)).collect();
    let (mut guards, idx) = store.lock_many(&keys);
    for (k, &g) in idx.iter().enumerate() {
        let i = 1 + 2 * k;
        guards[g].insert(a.get(i), Value::Str(a.value(i + 1)), 0);
    }
    reply::ok(w);
}

fn append<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer) {
    let key = a.get(1);
    let mut sh = store.shard(key);
    let Some(e) = sh.get(key) else {
        let v = a.value(2);
        let len = v.len();
        sh.insert(key, Value::Str(v), 0);
        return reply::int(w, len as i64);
    };
    let mut joined = BytesMut::new();
    match &e.value {
        Value::List(_) => return err(w, WRONGTYPE),
        Value::Str(b) => {
            joined.reserve(b.len() + a.get(2).len());
            joined.extend_from_slice(b);
        }
        Value::Int(i) => joined.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
    }
    joined.extend_from_slice(a.get(2));
    let len = joined.len();
    e.value = Value::Str(joined.freeze());
    reply::int(w, len as i64);
}

fn strlen(store: &Store, key: &[u8], w: &mut LinkBuffer) {
    let mut sh = store.shard(key);
    match sh.get(key).map(|e| &e.value) {
        None => reply::int(w, 0),
        Some(Value::Str(b)) => reply::int(w, b.len() as i64),
        Some(Value::Int(i)) => reply::int(w, itoa::Buffer::new().format(*i).len() as i64),
        Some(Value::List(_)) => err(w, WRONGTYPE),
    }
}

fn expire<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer, seconds: bool) {
    let Some(v) = parse_i64(a.get(2)) else {
        return err(w, NOT_INT);
    };
    let ms = if seconds {
        v.checked_mul(1000)
    } else {
        Some(v)
    };
    let deadline = ms.and_then(|ms| (now_ms() as i64).checked_add(ms));
    let Some(deadline) = deadline else {
        let name: &[u8] = if seconds { b"expire" } else { b"pexpire" };
        return reply::error(w, &[b"ERR invalid expire time in '", name, b"' command"]);
    };
    let key = a.get(1);
    let mut sh = store.shard(key);
    let hit = if deadline <= now_ms() as i64 {
        // A deadline in the past deletes the key, as Redis does.
        sh.remove(key)
    } else {
        sh.set_expiry(key, deadline as u64)
    };
    reply::int(w, hit as i64);
}

fn ttl(store: &Store, key: &[u8], w: &mut LinkBuffer, seconds: bool) {
    let mut sh = store.shard(key);
    let Some(e) = sh.get(key) else {
        return reply::int(w, -2);
    };
    if e.expires_at == 0 {
        return reply::int(w, -1);
    }
    let left = e.expires_at.saturating_sub(now_ms()) as i64;
    reply::int(w, if seconds { (left + 500) / 1000 } else { left });
}

fn push<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer, front: bool) {
    let key = a.get(1);
    let mut sh = store.shard(key);
    let e = sh.get_or_insert_with(key, || Value::List(VecDeque::new()));
    let Value::List(list) = &mut e.value else {
        return err(w, WRONGTYPE);
    };
    for i in 2..a.len() {
        if front {
            list.push_front(a.value(i));
        } else {
            list.push_back(a.value(i));
        }
    }
    reply::int(w, list.len() as i64);
}

fn pop<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer, front: bool) {
    if a.len() > 3 {
        return wrong_arity(w, if front { b"lpop" } else { b"rpop" });
    }
    let count = if a.len() == 3 {
        match parse_i64(a.get(2)) {
            Some(c) if c >= 0 => Some(c as usize),
            _ => return err(w, b"ERR value is out of range, must be positive"),
        }
    } else {
        None
    };
    let key = a.get(1);
    let mut sh = store.shard(key);
    let list = match sh.get(key).map(|e| &mut e.value) {
        None => {
            return if count.is_some() {
                reply::nil_array(w)
            } else {
                reply::nil(w)
            };
        }
        Some(Value::List(l)) => l,
        Some(_) => return err(w, WRONGTYPE),
    };
    let take = |l: &mut VecDeque<Bytes>| if front { l.pop_front() } else { l.pop_back() };
    match count {
        None => match take(list) {
            Some(v) => reply::bulk_bytes(w, &v),
            None => reply::nil(w),
        },
        Some(c) => {
            let c = c.min(list.len());
            reply::array(w, c);
            for _ in 0..c {
                if let Some(v) = take(list) {
                    reply::bulk_bytes(w, &v);
                }
            }
        }
    }
    if list.is_empty() {
        sh.remove(key);
    }
}

fn lrange<A: Args + ?Sized>(store: &Store, a: &A, w: &mut LinkBuffer) {
    let (Some(start), Some(stop)) = (parse_i64(a.get(2)), parse_i64(a.get(3))) else {
        return err(w, NOT_INT);
    };
    let key = a.get(1);
    let mut sh = store.shard(key);
    let list = match sh.get(key).map(|e| &e.value) {
        None => return reply::array(w, 0),
        Some(Value::List(l)) => l,
        Some(_) => return err(w, WRONGTYPE),
    };
    let len = list.len() as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return reply::array(w, 0);
    }
    let (start, stop) = (start as usize, stop as usize);
    reply::array(w, stop - start + 1);
    reply::bulks(w, list.range(start..=stop));
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS …`: empty answers, enough for
/// `redis-cli` (which only uses them for hints).
fn command<A: Args + ?Sized>(a: &A, w: &mut LinkBuffer) {
    if a.len() >= 2 && a.get(1).eq_ignore_ascii_case(b"COUNT") {
        reply::int(w, 0);
    } else {
        reply::array(w, 0);
    }
}

/// The configuration `CONFIG GET` reports: what `redis-benchmark` asks.
const CONFIG: &[(&[u8], &[u8])] = &[(b"save", b""), (b"appendonly", b"no")];

fn config<A: Args + ?Sized>(a: &A, w: &mut LinkBuffer) {
    let sub = a.get(1);
    if sub.eq_ignore_ascii_case(b"GET") {
        if a.len() < 3 {
            return wrong_arity(w, b"config|get");
        }
        let mut hits: Vec<(&[u8], &[u8])> = Vec::new();
        for i in 2..a.len() {
            let pat = a.get(i);
            for &(k, v) in CONFIG {
                if (pat == b"*" || pat.eq_ignore_ascii_case(k)) && !hits.iter().any(|h| h.0 == k) {
                    hits.push((k, v));
                }
            }
        }
        reply::array(w, hits.len() * 2);
        for (k, v) in hits {
            reply::bulk(w, k);
            reply::bulk(w, v);
        }
    } else if sub.eq_ignore_ascii_case(b"SET") || sub.eq_ignore_ascii_case(b"RESETSTAT") {
        reply::ok(w);
    } else {
        let mut msg = b"ERR unknown subcommand '".to_vec();
        msg.extend(sub.iter().take(64));
        msg.extend_from_slice(b"'. Try CONFIG HELP.");
        reply::error(w, &[&msg]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &Store, line: &str) -> String {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        let mut w = LinkBuffer::new();
        execute(store, &args[..], &mut w);
        w.flush();
        let n = w.len();
        String::from_utf8(w.read_binary(n).unwrap()).unwrap()
    }

    #[test]
    fn strings_and_counters() {
        let st = Store::new(4);
        assert_eq!(run(&st, "PING"), "+PONG\r\n");
        assert_eq!(run(&st, "ping hi"), "$2\r\nhi\r\n");
        assert_eq!(run(&st, "GET k"), "$-1\r\n");
        assert_eq!(run(&st, "SET k v"), "+OK\r\n");
        assert_eq!(run(&st, "SET k w NX"), "$-1\r\n");
        assert_eq!(run(&st, "SET j w XX"), "$-1\r\n");
        assert_eq!(run(&st, "SET k w XX"), "+OK\r\n");
        assert_eq!(run(&st, "GET k"), "$1\r\nw\r\n");
        assert_eq!(run(&st, "SET k w NX XX"), "-ERR syntax error\r\n");
        assert_eq!(
            run(&st, "SET k w EX 0"),
            "-ERR invalid expire time in 'set' command\r\n"
        );
        assert_eq!(
            run(&st, "SET k w EX x"),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            run(&st, "INCR k"),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(run(&st, "INCR c"), ":1\r\n");
        assert_eq!(run(&st, "INCRBY c 41"), ":42\r\n");
        assert_eq!(run(&st, "DECR c"), ":41\r\n");
        assert_eq!(run(&st, "DECRBY c 1"), ":40\r\n");
        assert_eq!(run(&st, "GET c"), "$2\r\n40\r\n");
        assert_eq!(run(&st, "APPEND c 1"), ":3\r\n");
        assert_eq!(run(&st, "STRLEN c"), ":3\r\n");
        assert_eq!(run(&st, "INCR c"), ":402\r\n");
        assert_eq!(run(&st, "SET m 9223372036854775807"), "+OK\r\n");
        assert_eq!(
            run(&st, "INCR m"),
            "-ERR increment or decrement would overflow\r\n"
        );
        assert_eq!(run(&st, "MSET a 1 b 2"), "+OK\r\n");
        assert_eq!(
            run(&st, "MSET a 1 b"),
            "-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(
            run(&st, "MGET a b zz"),
            "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n"
        );
        assert_eq!(run(&st, "EXISTS a b zz a"), ":3\r\n");
        assert_eq!(run(&st, "DEL a zz"), ":1\r\n");
        assert_eq!(run(&st, "DBSIZE"), ":4\r\n");
        assert_eq!(run(&st, "FLUSHDB"), "+OK\r\n");
        assert_eq!(run(&st, "DBSIZE"), ":0\r\n");
    }

    #[test]
    fn expiry() {
        let st = Store::new(4);
        assert_eq!(run(&st, "TTL k"), ":-2\r\n");
        assert_eq!(run(&st, "SET k v"), "+OK\r\n");
        assert_eq!(run(&st, "TTL k"), ":-1\r\n");
        assert_eq!(run(&st, "EXPIRE k 100"), ":1\r\n");
        assert_eq!(run(&st, "TTL k"), ":100\r\n");
        assert_eq!(run(&st, "SET k v KEEPTTL"), "+OK\r\n");
        assert_eq!(run(&st, "TTL k"), ":100\r\n");
        assert_eq!(run(&st, "SET k v"), "+OK\r\n");
        assert_eq!(run(&st, "TTL k"), ":-1\r\n");
        assert_eq!(run(&st, "SET k v PX 1"), "+OK\r\n");
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert_eq!(run(&st, "GET k"), "$-1\r\n");
        assert_eq!(run(&st, "SET k v"), "+OK\r\n");
        assert_eq!(run(&st, "EXPIRE k -1"), ":1\r\n");
        assert_eq!(run(&st, "EXISTS k"), ":0\r\n");
        assert_eq!(run(&st, "EXPIRE nokey 10"), ":0\r\n");
        assert_eq!(
            run(&st, "EXPIRE k 9223372036854775807"),
            "-ERR invalid expire time in 'expire' command\r\n"
        );
    }

    #[test]
    fn lists() {
        let st = Store::new(4);
        assert_eq!(run(&st, "LPUSH l a b c"), ":3\r\n");
        assert_eq!(run(&st, "RPUSH l d"), ":4\r\n");
        assert_eq!(
            run(&st, "LRANGE l 0 -1"),
            "*4\r\n$1\r\nc\r\n$1\r\nb\r\n$1\r\na\r\n$1\r\nd\r\n"
        );
        assert_eq!(run(&st, "LRANGE l -2 100"), "*2\r\n$1\r\na\r\n$1\r\nd\r\n");
        assert_eq!(run(&st, "LRANGE l 3 1"), "*0\r\n");
        assert_eq!(run(&st, "LPOP l"), "$1\r\nc\r\n");
        assert_eq!(run(&st, "RPOP l 2"), "*2\r\n$1\r\nd\r\n$1\r\na\r\n");
        assert_eq!(run(&st, "LLEN l"), ":1\r\n");
        assert_eq!(run(&st, "RPOP l"), "$1\r\nb\r\n");
        assert_eq!(run(&st, "EXISTS l"), ":0\r\n");
        assert_eq!(run(&st, "LPOP l"), "$-1\r\n");
        assert_eq!(run(&st, "LPOP l 2"), "*-1\r\n");
        assert_eq!(run(&st, "SET s x"), "+OK\r\n");
        assert!(run(&st, "LPUSH s a").starts_with("-WRONGTYPE"));
        assert!(run(&st, "LRANGE s 0 1").starts_with("-WRONGTYPE"));
        assert_eq!(run(&st, "LPUSH l2 a"), ":1\r\n");
        assert!(run(&st, "GET l2").starts_with("-WRONGTYPE"));
        assert!(run(&st, "INCR l2").starts_with("-WRONGTYPE"));
    }

    #[test]
    fn admin_and_errors() {
        let st = Store::new(4);
        assert_eq!(
            run(&st, "CONFIG GET save"),
            "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
        );
        assert_eq!(
            run(&st, "config get appendonly"),
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert_eq!(run(&st, "CONFIG GET maxmemory"), "*0\r\n");
        assert_eq!(run(&st, "COMMAND DOCS"), "*0\r\n");
        assert_eq!(run(&st, "COMMAND"), "*0\r\n");
        assert_eq!(
            run(&st, "GET"),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            run(&st, "NOPE a b"),
            "-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n"
        );
        assert_eq!(run(&st, "SELECT 0"), "+OK\r\n");
        assert_eq!(run(&st, "QUIT"), "+OK\r\n");
    }
}
