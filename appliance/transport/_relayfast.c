/* The relay's hot path in C (relay_fastpath.py drives it; specs/srtla.md says what
 * it does): the SRT data a registered link sends, forwarded to its group's socket
 * towards the ingest, with the SRTLA ACK every 10 of them; and what the ingest
 * sends back, SRT ACKs to every link of the group, the rest to the link that
 * delivered last. A registered link's SRT control (the caller's ACKACKs, NAKs:
 * about a hundred a second a stream) is forwarded too, and its SRTLA keepalives
 * echoed, their time and the RTT they carry kept for Python's stats. Everything
 * else (registrations, SRT handshakes, whose stream id Python reads, an address it
 * does not know) goes back to Python whole, as (datagram, address) with the
 * address as the socket module writes it.
 *
 * Why C: in CPython the interpreter's work per datagram (a lookup, some counters,
 * a send) costs more than the kernel's; a plain Python forwarder already spends 1.4
 * to 1.8 times what a C one does (bench/relay_scale.py). Here a wake-up of the
 * loop costs one call, and one recvmmsg reads up to 64 datagrams.
 *
 * State: fixed tables made once (links, groups; no allocation per datagram), as big
 * as the relay's limits allow (a full one is a caller's error). Counters accumulate until
 * Python takes them (once a second, and for /stats), so nothing is counted twice.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define SIZE 2048
#define ACK_SEQS 10
#define SRTLA_ACK 0x9100u
#define SRTLA_KEEPALIVE 0x9000u
#define SRT_HANDSHAKE 0x8000u
#define MIN_SRT 16
#define BUCKETS 4096 /* a power of two */

typedef struct {
    int used, group, next;  /* next: in its hash bucket's chain */
    int gprev, gnext;       /* in its group's list */
    uint8_t key[18];        /* the address (IPv4 in the first 4 bytes), the port */
    struct sockaddr_storage sa;
    socklen_t salen;
    unsigned long long packets, bytes;
    double last, keepalive_at, rtt_ms; /* rtt_ms: -1 where its last keepalive did not carry it */
    uint32_t acks[ACK_SEQS];
    int nacks;
} Link;

typedef struct {
    int used, fd, first, last_link;
    unsigned long long forwarded, full, unreachable;
} Group;

typedef struct {
    PyObject_HEAD
    int listen_fd, capacity;
    Link *links;
    Group *groups;
    int buckets[BUCKETS];
    PyObject *on_refused; /* called with a group's slot when its ingest refuses (ICMP) */
    unsigned long long to_sender_full, to_sender_lost;
    char bufs[BATCH][SIZE];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage names[BATCH];
} Pump;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* time.monotonic()'s clock */
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int key_of(const struct sockaddr *sa, uint8_t key[18]) {
    memset(key, 0, 18);
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        memcpy(key, &a->sin6_addr, 16);
        memcpy(key + 16, &a->sin6_port, 2);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        memcpy(key, &a->sin_addr, 4);
        memcpy(key + 16, &a->sin_port, 2);
    } else {
        return -1;
    }
    return 0;
}

static unsigned hash_of(const uint8_t key[18]) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 18; i++) h = (h ^ key[i]) * 16777619u;
    return h & (BUCKETS - 1);
}

static int find(Pump *p, const uint8_t key[18]) {
    for (int i = p->buckets[hash_of(key)]; i >= 0; i = p->links[i].next)
        if (!memcmp(p->links[i].key, key, 18)) return i;
    return -1;
}

static void send_to_link(Pump *p, Link *l, const void *d, size_t n) {
    if (sendto(p->listen_fd, d, n, MSG_DONTWAIT, (struct sockaddr *)&l->sa, l->salen) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) p->to_sender_full++;
        else p->to_sender_lost++;
    }
}

static PyObject *address(const struct sockaddr *sa, socklen_t n) {
    char host[NI_MAXHOST];
    int port;
    if (getnameinfo(sa, n, host, sizeof host, NULL, 0, NI_NUMERICHOST)) return NULL;
    port = ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                           : ((const struct sockaddr_in *)sa)->sin_port);
    return Py_BuildValue("(si)", host, port);
}

/* --- the type ---------------------------------------------------------------------- */

static void Pump_dealloc(Pump *p) {
    PyMem_Free(p->links);
    PyMem_Free(p->groups);
    Py_XDECREF(p->on_refused);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int Pump_init(Pump *p, PyObject *args, PyObject *kw) {
    static char *names[] = {"listen_fd", "capacity", "on_refused", NULL};
    PyObject *cb;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiO", names, &p->listen_fd, &p->capacity, &cb)) return -1;
    if (p->capacity < 1 || p->capacity > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "capacity: 1 to 1048576 links");
        return -1;
    }
    PyMem_Free(p->links);
    PyMem_Free(p->groups);
    p->links = PyMem_Calloc(p->capacity, sizeof(Link));
    p->groups = PyMem_Calloc(p->capacity, sizeof(Group));
    if (!p->links || !p->groups) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < BUCKETS; i++) p->buckets[i] = -1;
    Py_XSETREF(p->on_refused, Py_NewRef(cb));
    return 0;
}

static int group_slot(Pump *p, PyObject *arg) {
    long g = PyLong_AsLong(arg);
    if (g == -1 && PyErr_Occurred()) return -1;
    if (g < 0 || g >= p->capacity || !p->groups[g].used) {
        PyErr_Format(PyExc_ValueError, "no group in slot %ld", g);
        return -1;
    }
    return (int)g;
}

static int link_slot(Pump *p, PyObject *arg) {
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) return -1;
    if (i < 0 || i >= p->capacity || !p->links[i].used) {
        PyErr_Format(PyExc_ValueError, "no link in slot %ld", i);
        return -1;
    }
    return (int)i;
}

/* group(server_fd) -> its slot */
static PyObject *Pump_group(Pump *p, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    for (int g = 0; g < p->capacity; g++) {
        if (!p->groups[g].used) {
            p->groups[g] = (Group){.used = 1, .fd = fd, .first = -1, .last_link = -1};
            return PyLong_FromLong(g);
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "the fast path's group table is full");
    return NULL;
}

static PyObject *taken(Link *l) {
    PyObject *r = Py_BuildValue("(KKddd)", l->packets, l->bytes, l->last, l->keepalive_at, l->rtt_ms);
    l->packets = l->bytes = 0;
    return r;
}

static void unlink_slot(Pump *p, int i) {
    Link *l = &p->links[i];
    Group *g = &p->groups[l->group];
    int *at = &p->buckets[hash_of(l->key)];
    while (*at != i) at = &p->links[*at].next;
    *at = l->next;
    if (l->gprev >= 0) p->links[l->gprev].gnext = l->gnext;
    else g->first = l->gnext;
    if (l->gnext >= 0) p->links[l->gnext].gprev = l->gprev;
    if (g->last_link == i) g->last_link = g->first; /* the return traffic keeps a way back */
    l->used = 0;
}

/* link(group_slot, host, port, pending_acks) -> its slot */
static PyObject *Pump_link(Pump *p, PyObject *args) {
    PyObject *gobj, *pending;
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "OsiO!", &gobj, &host, &port, &PyList_Type, &pending)) return NULL;
    int g = group_slot(p, gobj);
    if (g < 0) return NULL;
    struct sockaddr_storage self;
    socklen_t selflen = sizeof self;
    if (getsockname(p->listen_fd, (struct sockaddr *)&self, &selflen) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    char service[8];
    snprintf(service, sizeof service, "%d", port & 0xFFFF);
    struct addrinfo hints = {.ai_family = self.ss_family, .ai_socktype = SOCK_DGRAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *found;
    if (getaddrinfo(host, service, &hints, &found)) {
        PyErr_Format(PyExc_ValueError, "not an address of the listening socket's family: %s", host);
        return NULL;
    }
    uint8_t key[18];
    const char *wrong = key_of(found->ai_addr, key) < 0 ? "not an IP address" : find(p, key) >= 0 ? "in already" : NULL;
    int i = 0;
    while (!wrong && i < p->capacity && p->links[i].used) i++;
    if (!wrong && i == p->capacity) wrong = "the fast path's link table is full";
    if (wrong) {
        freeaddrinfo(found);
        PyErr_Format(PyExc_RuntimeError, "link %s port %d: %s", host, port, wrong);
        return NULL;
    }
    Link *l = &p->links[i];
    *l = (Link){.used = 1, .group = g, .gprev = -1, .gnext = p->groups[g].first, .salen = found->ai_addrlen,
                .rtt_ms = -1};
    memcpy(&l->sa, found->ai_addr, found->ai_addrlen);
    freeaddrinfo(found);
    memcpy(l->key, key, 18);
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(pending) && l->nacks < ACK_SEQS - 1; k++)
        l->acks[l->nacks++] = (uint32_t)PyLong_AsUnsignedLongMask(PyList_GET_ITEM(pending, k));
    if (PyErr_Occurred()) {
        l->used = 0;
        return NULL;
    }
    if (p->groups[g].first >= 0) p->links[p->groups[g].first].gprev = i;
    p->groups[g].first = i;
    unsigned h = hash_of(key);
    l->next = p->buckets[h];
    p->buckets[h] = i;
    return PyLong_FromLong(i);
}

/* unlink(slot) -> what take(slot) gives, and the sequence numbers not yet acknowledged */
static PyObject *Pump_unlink(Pump *p, PyObject *arg) {
    int i = link_slot(p, arg);
    if (i < 0) return NULL;
    Link *l = &p->links[i];
    PyObject *acks = PyList_New(l->nacks);
    if (!acks) return NULL;
    for (int k = 0; k < l->nacks; k++) PyList_SET_ITEM(acks, k, PyLong_FromUnsignedLong(l->acks[k]));
    PyObject *t = taken(l);
    unlink_slot(p, i);
    return Py_BuildValue("(NN)", t, acks);
}

/* ungroup(slot): the group's socket is closing; its links leave with it */
static PyObject *Pump_ungroup(Pump *p, PyObject *arg) {
    int g = group_slot(p, arg);
    if (g < 0) return NULL;
    while (p->groups[g].first >= 0) unlink_slot(p, p->groups[g].first);
    p->groups[g].used = 0;
    Py_RETURN_NONE;
}

/* take(slot) -> (packets, bytes, last heard, last keepalive or 0, its RTT in ms or -1):
 * the packets and bytes since the last take */
static PyObject *Pump_take(Pump *p, PyObject *arg) {
    int i = link_slot(p, arg);
    return i < 0 ? NULL : taken(&p->links[i]);
}

/* take_group(slot) -> (the link that delivered last or -1, forwarded, dropped: send
 * buffer full, dropped: unreachable), the counts since the last take */
static PyObject *Pump_take_group(Pump *p, PyObject *arg) {
    int g = group_slot(p, arg);
    if (g < 0) return NULL;
    Group *gr = &p->groups[g];
    PyObject *r = Py_BuildValue("(iKKK)", gr->last_link, gr->forwarded, gr->full, gr->unreachable);
    gr->forwarded = gr->full = gr->unreachable = 0;
    return r;
}

/* delivered(slot): the link delivered last (what Python forwarded from it: the
 * ingest's answers to SRT control go back on it) */
static PyObject *Pump_delivered(Pump *p, PyObject *arg) {
    int i = link_slot(p, arg);
    if (i < 0) return NULL;
    p->groups[p->links[i].group].last_link = i;
    Py_RETURN_NONE;
}

/* take_senders() -> (dropped towards the senders: send buffer full, undeliverable) */
static PyObject *Pump_take_senders(Pump *p, PyObject *unused) {
    PyObject *r = Py_BuildValue("(KK)", p->to_sender_full, p->to_sender_lost);
    p->to_sender_full = p->to_sender_lost = 0;
    return r;
}

static int receive(Pump *p, int fd) {
    for (int i = 0; i < BATCH; i++) {
        p->iov[i] = (struct iovec){p->bufs[i], SIZE};
        p->msgs[i].msg_hdr = (struct msghdr){.msg_name = &p->names[i], .msg_namelen = sizeof p->names[i],
                                             .msg_iov = &p->iov[i], .msg_iovlen = 1};
    }
    return recvmmsg(fd, p->msgs, BATCH, MSG_DONTWAIT, NULL);
}

/* data: SRT data, whose sequence number goes into the link's next SRTLA ACK (else SRT control) */
static void forward(Pump *p, int i, const uint8_t *d, size_t n, double now, int data) {
    Link *l = &p->links[i];
    Group *g = &p->groups[l->group];
    l->last = now;
    l->packets++;
    l->bytes += n;
    g->last_link = i;
    if (send(g->fd, d, n, MSG_DONTWAIT) >= 0) {
        g->forwarded++;
    } else if (errno == ECONNREFUSED) { /* an earlier one's ICMP error: this one did not go */
        g->unreachable++;
        PyObject *r = PyObject_CallFunction(p->on_refused, "i", l->group);
        if (r) Py_DECREF(r);
        else PyErr_WriteUnraisable(p->on_refused);
        if (!l->used) return; /* (its group closed in there) */
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        g->full++;
    } else {
        g->unreachable++;
    }
    if (!data) return;
    l->acks[l->nacks++] = ((uint32_t)d[0] << 24 | d[1] << 16 | d[2] << 8 | d[3]) & 0x7FFFFFFF;
    if (l->nacks == ACK_SEQS) {
        uint32_t ack[1 + ACK_SEQS] = {htonl(SRTLA_ACK << 16)};
        for (int k = 0; k < ACK_SEQS; k++) ack[1 + k] = htonl(l->acks[k]);
        send_to_link(p, l, ack, sizeof ack);
        l->nacks = 0;
    }
}

/* read(fd) -> [(datagram, address)] for Python: what one recvmmsg on a socket the
 * senders send to (the listening one, or a link's own) read, less the SRT data of
 * the links it knows, which it forwarded */
static PyObject *Pump_read(Pump *p, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    int got = receive(p, fd);
    if (got < 0) return out; /* nothing waiting; or an ICMP error for something sent from it */
    double now = now_s();
    for (int m = 0; m < got; m++) {
        const uint8_t *d = (const uint8_t *)p->bufs[m];
        size_t n = p->msgs[m].msg_len;
        uint8_t key[18];
        int i = -1;
        unsigned t = n >= 2 ? (unsigned)d[0] << 8 | d[1] : 0;
        int data = n >= MIN_SRT && !(t & 0x8000);
        int control = n >= MIN_SRT && (t & 0xFF00) == SRT_HANDSHAKE && t != SRT_HANDSHAKE;
        int keepalive = t == SRTLA_KEEPALIVE;
        if ((data || control || keepalive) && key_of((struct sockaddr *)&p->names[m], key) == 0) i = find(p, key);
        if (i >= 0 && keepalive) {
            Link *l = &p->links[i];
            l->last = l->keepalive_at = now;
            /* (srtla.keepalive_rtt_ms: the 14-byte form carries it, in microseconds at byte 10) */
            l->rtt_ms = n == 14 ? (double)((uint32_t)d[10] << 24 | d[11] << 16 | d[12] << 8 | d[13]) / 1000 : -1;
            send_to_link(p, l, d, n); /* echoed whole: the sender's timestamp comes back */
            continue;
        }
        if (i >= 0) {
            forward(p, i, d, n, now, data);
            continue;
        }
        PyObject *addr = address((struct sockaddr *)&p->names[m], p->msgs[m].msg_hdr.msg_namelen);
        if (!addr) continue; /* (not an address family of ours) */
        PyObject *item = Py_BuildValue("(y#N)", d, (Py_ssize_t)n, addr);
        if (!item || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

/* from_server(group slot) -> (datagrams read, errno of the read or 0): what the ingest
 * sent back on the group's socket, each sent on to the group's links */
static PyObject *Pump_from_server(Pump *p, PyObject *arg) {
    int g = group_slot(p, arg);
    if (g < 0) return NULL;
    Group *gr = &p->groups[g];
    int got = receive(p, gr->fd);
    if (got < 0) {
        int e = errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : errno;
        return Py_BuildValue("(ii)", 0, e);
    }
    for (int m = 0; m < got; m++) {
        const uint8_t *d = (const uint8_t *)p->bufs[m];
        size_t n = p->msgs[m].msg_len;
        if (n >= 2 && d[0] == 0x80 && d[1] == 0x02) { /* an SRT ACK: on every link */
            for (int i = gr->first; i >= 0; i = p->links[i].gnext) send_to_link(p, &p->links[i], d, n);
        } else if (gr->last_link >= 0) {
            send_to_link(p, &p->links[gr->last_link], d, n);
        }
    }
    return Py_BuildValue("(ii)", got, 0);
}

static PyMethodDef Pump_methods[] = {
    {"group", (PyCFunction)Pump_group, METH_O, "group(server_fd) -> slot"},
    {"ungroup", (PyCFunction)Pump_ungroup, METH_O, "ungroup(slot): it and its links leave"},
    {"link", (PyCFunction)Pump_link, METH_VARARGS, "link(group, host, port, pending_acks) -> slot"},
    {"unlink", (PyCFunction)Pump_unlink, METH_O, "unlink(slot) -> ((packets, bytes, last), pending_acks)"},
    {"take", (PyCFunction)Pump_take, METH_O, "take(slot) -> (packets, bytes, last) since the last take"},
    {"take_group", (PyCFunction)Pump_take_group, METH_O,
     "take_group(slot) -> (last link, forwarded, dropped full, dropped unreachable)"},
    {"delivered", (PyCFunction)Pump_delivered, METH_O, "delivered(slot): the link that delivered last"},
    {"take_senders", (PyCFunction)Pump_take_senders, METH_NOARGS, "-> (dropped full, undeliverable) to senders"},
    {"read", (PyCFunction)Pump_read, METH_O, "read(fd) -> [(datagram, address)] left for Python"},
    {"from_server", (PyCFunction)Pump_from_server, METH_O, "from_server(group) -> (read, errno)"},
    {NULL},
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "appliance.transport._relayfast.Pump",
    .tp_basicsize = sizeof(Pump),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The relay's hot path: Pump(listen_fd, capacity, on_refused)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pump_init,
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_methods = Pump_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_relayfast", "The relay's hot path in C.", -1, NULL};

PyMODINIT_FUNC PyInit__relayfast(void) {
    if (PyType_Ready(&PumpType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Pump", (PyObject *)&PumpType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "BATCH", BATCH);
    return m;
}
