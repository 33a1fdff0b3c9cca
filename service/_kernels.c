/* The request path's per-candidate loops in C: one pass where Python touched each candidate
 * several times (a slice, a list entry, a numpy call per column).
 *
 * Each function replaced numpy or list code that stays in tests/service/test_kernels.py as its
 * reference (held equal, bit for bit, on random and malformed input); its caller in service/
 * says what it is for. Nothing here knows a record layout by heart: field offsets come
 * from the caller, which reads them off the numpy dtype that owns the layout
 * (service/index/records.py). Outputs are bytes objects the caller views with np.frombuffer,
 * so the module needs only Python's C API (no numpy headers at build time).
 *
 * Records are little-endian; so is every host this builds for (x86-64, arm64): checked at
 * compile time below.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "index records are little-endian: this module reads them in place"
#endif

/* A new bytes object of `size` bytes to fill, and a pointer to them. */
static PyObject *new_bytes(Py_ssize_t size, char **data) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out != NULL) {
        *data = PyBytes_AS_STRING(out);
    }
    return out;
}

static uint32_t read_u32(const char *at) {
    uint32_t value;
    memcpy(&value, at, sizeof value);
    return value;
}

static uint16_t read_u16(const char *at) {
    uint16_t value;
    memcpy(&value, at, sizeof value);
    return value;
}

PyDoc_STRVAR(split_items_doc,
"split_items(records, fixed, n_title_at, n_text_at, n_title_terms_at, n_text_terms_at)\n"
"-> (heads, tails, title_stops, terms_at, term_offsets)\n\n"
"Item records (bytes, none None) -> their fixed-size heads joined (k * fixed bytes), their\n"
"term-hash tails joined, and int64 arrays as bytes: each record's title end and term start\n"
"(offsets within the record) and the (k + 1,) bounds of each record's run in the tails.\n"
"The *_at arguments are the byte offsets of the head's u32 title and text lengths and u16\n"
"term counts. A record shorter than its head, or whose length disagrees with it, is a\n"
"ValueError (the messages of records.decode_items).");

static PyObject *split_items(PyObject *self, PyObject *args) {
    PyObject *records;
    Py_ssize_t fixed, n_title_at, n_text_at, n_title_terms_at, n_text_terms_at;
    if (!PyArg_ParseTuple(args, "O!nnnnn", &PyList_Type, &records, &fixed, &n_title_at,
                          &n_text_at, &n_title_terms_at, &n_text_terms_at)) {
        return NULL;
    }
    if (fixed < n_title_at + 4 || fixed < n_text_at + 4 || fixed < n_title_terms_at + 2 ||
        fixed < n_text_terms_at + 2 || n_title_at < 0 || n_text_at < 0 ||
        n_title_terms_at < 0 || n_text_terms_at < 0) {
        PyErr_SetString(PyExc_ValueError, "a length field lies outside the head");
        return NULL;
    }
    Py_ssize_t k = PyList_GET_SIZE(records);
    /* Pass 1: check every record against its head and size the tails. */
    Py_ssize_t total_terms = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *raw = PyList_GET_ITEM(records, i);
        if (!PyBytes_Check(raw)) {
            PyErr_SetString(PyExc_TypeError, "item records must be bytes");
            return NULL;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(raw);
        if (size < fixed) {
            PyErr_Format(PyExc_ValueError, "an item record is shorter than its %zd-byte head",
                         fixed);
            return NULL;
        }
        const char *head = PyBytes_AS_STRING(raw);
        uint64_t n_terms = (uint64_t)read_u16(head + n_title_terms_at) +
                           read_u16(head + n_text_terms_at);
        uint64_t expected = (uint64_t)fixed + read_u32(head + n_title_at) +
                            read_u32(head + n_text_at) + 8 * n_terms;
        if ((uint64_t)size != expected) {
            PyErr_SetString(PyExc_ValueError, "an item record's length does not match its head");
            return NULL;
        }
        total_terms += (Py_ssize_t)n_terms;
    }
    char *heads_at = NULL, *tails_at = NULL, *stops_at = NULL, *terms_at_at = NULL;
    char *offsets_at = NULL;
    PyObject *heads = new_bytes(k * fixed, &heads_at);
    PyObject *tails = new_bytes(total_terms * 8, &tails_at);
    PyObject *title_stops = new_bytes(k * 8, &stops_at);
    PyObject *terms_at = new_bytes(k * 8, &terms_at_at);
    PyObject *offsets = new_bytes((k + 1) * 8, &offsets_at);
    if (heads == NULL || tails == NULL || title_stops == NULL || terms_at == NULL ||
        offsets == NULL) {
        Py_XDECREF(heads);
        Py_XDECREF(tails);
        Py_XDECREF(title_stops);
        Py_XDECREF(terms_at);
        Py_XDECREF(offsets);
        return NULL;
    }
    /* Pass 2: copy. */
    int64_t run_start = 0;
    memcpy(offsets_at, &run_start, 8);
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *raw = PyList_GET_ITEM(records, i);
        const char *record = PyBytes_AS_STRING(raw);
        memcpy(heads_at + i * fixed, record, (size_t)fixed);
        int64_t title_stop = (int64_t)fixed + read_u32(record + n_title_at);
        int64_t terms_start = title_stop + read_u32(record + n_text_at);
        int64_t n_terms = (int64_t)read_u16(record + n_title_terms_at) +
                          read_u16(record + n_text_terms_at);
        memcpy(tails_at + run_start * 8, record + terms_start, (size_t)(n_terms * 8));
        run_start += n_terms;
        memcpy(stops_at + i * 8, &title_stop, 8);
        memcpy(terms_at_at + i * 8, &terms_start, 8);
        memcpy(offsets_at + (i + 1) * 8, &run_start, 8);
    }
    return Py_BuildValue("(NNNNN)", heads, tails, title_stops, terms_at, offsets);
}

/* A contiguous buffer of `itemsize`-byte elements, or an error naming `what`. */
static int get_array(PyObject *object, Py_buffer *view, Py_ssize_t itemsize, int writable,
                     const char *what) {
    if (PyObject_GetBuffer(object, view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS
                                                  : PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    if (view->itemsize != itemsize || view->len % itemsize != 0) {
        PyErr_Format(PyExc_TypeError, "%s must hold %zd-byte elements", what, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(relevance_doc,
"term_relevance(hashes, offsets, title_counts, query_terms, out) -> list[int]\n\n"
"The term columns of contract.relevance_features_of_terms, written into `out` ((N, 5)\n"
"float32, C order): 1 title term coverage, 2 text term coverage, 3 title Jaccard; `hashes`\n"
"u64 runs bounded by `offsets` (N + 1 int64), each run's first `title_counts[i]` (int64)\n"
"the title's; `query_terms` the query's distinct term hashes (u64, k >= 1). Returns the rows\n"
"whose title holds every query term (the phrase test's candidates). Columns 0 and 4 are\n"
"left as they are.");

static PyObject *term_relevance(PyObject *self, PyObject *args) {
    PyObject *hashes_obj, *offsets_obj, *counts_obj, *query_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &hashes_obj, &offsets_obj, &counts_obj, &query_obj,
                          &out_obj)) {
        return NULL;
    }
    /* Zeroed views: releasing one never acquired is a no-op, so every exit releases all. */
    Py_buffer hashes = {0}, offsets = {0}, counts = {0}, query = {0}, out = {0};
    PyObject *full = NULL;
    if (get_array(hashes_obj, &hashes, 8, 0, "hashes") < 0 ||
        get_array(offsets_obj, &offsets, 8, 0, "offsets") < 0 ||
        get_array(counts_obj, &counts, 8, 0, "title_counts") < 0 ||
        get_array(query_obj, &query, 8, 0, "query_terms") < 0 ||
        get_array(out_obj, &out, 4, 1, "out") < 0) {
        goto done;
    }
    Py_ssize_t n = counts.len / 8, n_hashes = hashes.len / 8, k = query.len / 8;
    const uint64_t *h = hashes.buf, *q = query.buf;
    const int64_t *bounds = offsets.buf, *title = counts.buf;
    float *o = out.buf;
    if (offsets.len / 8 != n + 1 || out.len / 4 != n * 5 || k < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "term_relevance: offsets must be N + 1, out (N, 5), the query non-empty");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t start = bounds[i], stop = bounds[i + 1], title_stop = start + title[i];
        if (start < 0 || start > stop || stop > n_hashes || title[i] < 0 || title_stop > stop) {
            PyErr_SetString(PyExc_ValueError, "term_relevance: a run lies outside the hashes");
            goto done;
        }
    }
    full = PyList_New(0);
    if (full == NULL) {
        goto done;
    }
    double kd = (double)k;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t start = bounds[i], stop = bounds[i + 1], title_stop = start + title[i];
        int64_t title_hits = 0, hits = 0;
        for (int64_t j = start; j < stop; j++) {
            uint64_t term = h[j];
            for (Py_ssize_t t = 0; t < k; t++) {
                if (term == q[t]) {
                    hits++;
                    title_hits += j < title_stop;
                    break;
                }
            }
        }
        /* As numpy computes them: int64 / int64 in float64, then stored as float32. */
        o[i * 5 + 1] = (float)((double)title_hits / kd);
        o[i * 5 + 2] = (float)((double)hits / kd);
        o[i * 5 + 3] = (float)((double)title_hits / (double)(k + title[i] - title_hits));
        if (title_hits == k) {
            PyObject *row = PyLong_FromSsize_t(i);
            if (row == NULL || PyList_Append(full, row) < 0) {
                Py_XDECREF(row);
                Py_CLEAR(full);
                goto done;
            }
            Py_DECREF(row);
        }
    }
done:
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&query);
    PyBuffer_Release(&out);
    return full;
}

/* The response's item keys, made once (module init). */
static PyObject *key_item_id, *key_score, *key_rank, *key_flags;

typedef struct {
    float score;
    Py_ssize_t index;
} Scored;

/* np.argsort(-scores, kind="stable")'s order: higher scores first, NaN last, ties (and NaNs)
 * by position; a total order, so qsort's lack of stability does not show. */
static int by_rank(const void *a, const void *b) {
    const Scored *x = a, *y = b;
    int x_nan = x->score != x->score, y_nan = y->score != y->score;
    if (x_nan != y_nan) {
        return x_nan - y_nan;
    }
    if (!x_nan && x->score != y->score) {
        return x->score > y->score ? -1 : 1;
    }
    return (x->index > y->index) - (x->index < y->index);
}

PyDoc_STRVAR(ranked_items_doc,
"ranked_items(item_ids, scores, top_k, item_known, pair_known, resolved, described, flags)\n"
"-> (items, order)\n\n"
"The response's items in rank order: {'item_id', 'score', 'rank'} and, where a candidate has\n"
"any, 'flags' (the shared list flags[code]: 1 its pair approximated, 2 unknown to the index,\n"
"3 unknown and described by the request). `scores` float32 (N,); `item_known`, `pair_known`\n"
"and `described` (or None) bool (N,); `top_k` < 0 keeps every candidate. `order` is the\n"
"ranked positions as int64 bytes.");

static PyObject *ranked_items(PyObject *self, PyObject *args) {
    PyObject *ids, *scores_obj, *known_obj, *pair_obj, *described_obj, *flags;
    Py_ssize_t top_k;
    int resolved;
    if (!PyArg_ParseTuple(args, "O!OnOOpOO!", &PyList_Type, &ids, &scores_obj, &top_k,
                          &known_obj, &pair_obj, &resolved, &described_obj, &PyTuple_Type,
                          &flags)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(flags) != 4) {
        PyErr_SetString(PyExc_ValueError, "ranked_items: flags must hold the 4 codes' lists");
        return NULL;
    }
    Py_buffer scores = {0}, known = {0}, pair = {0}, described = {0};  /* as in term_relevance */
    int has_described = described_obj != Py_None;
    PyObject *items = NULL, *order = NULL, *result = NULL;
    Scored *ranked = NULL;
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (get_array(scores_obj, &scores, 4, 0, "scores") < 0 ||
        get_array(known_obj, &known, 1, 0, "item_known") < 0 ||
        get_array(pair_obj, &pair, 1, 0, "pair_known") < 0 ||
        (has_described && get_array(described_obj, &described, 1, 0, "described") < 0)) {
        goto done;
    }
    if (scores.len / 4 != n || known.len != n || pair.len != n ||
        (has_described && described.len != n)) {
        PyErr_SetString(PyExc_ValueError, "ranked_items: every column must have one per id");
        goto done;
    }
    ranked = PyMem_Malloc(sizeof(Scored) * (size_t)(n > 0 ? n : 1));
    if (ranked == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *s = scores.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        ranked[i].score = s[i];
        ranked[i].index = i;
    }
    qsort(ranked, (size_t)n, sizeof(Scored), by_rank);
    Py_ssize_t kept = top_k < 0 || top_k > n ? n : top_k;
    char *order_at = NULL;
    order = new_bytes(kept * 8, &order_at);
    items = PyList_New(kept);
    if (order == NULL || items == NULL) {
        goto done;
    }
    const char *is_known = known.buf, *has_pair = pair.buf;
    const char *is_described = has_described ? described.buf : NULL;
    for (Py_ssize_t r = 0; r < kept; r++) {
        Py_ssize_t i = ranked[r].index;
        int64_t position = (int64_t)i;
        memcpy(order_at + r * 8, &position, 8);
        int code = is_known[i] ? (resolved && !has_pair[i])
                               : (is_described != NULL && is_described[i] ? 3 : 2);
        PyObject *item = PyDict_New();
        if (item == NULL) {
            goto done;
        }
        PyList_SET_ITEM(items, r, item); /* the list owns it from here */
        PyObject *score = PyFloat_FromDouble((double)ranked[r].score);
        PyObject *rank = PyLong_FromSsize_t(r + 1);
        int failed = score == NULL || rank == NULL ||
                     PyDict_SetItem(item, key_item_id, PyList_GET_ITEM(ids, i)) < 0 ||
                     PyDict_SetItem(item, key_score, score) < 0 ||
                     PyDict_SetItem(item, key_rank, rank) < 0 ||
                     (code && PyDict_SetItem(item, key_flags, PyTuple_GET_ITEM(flags, code)) < 0);
        Py_XDECREF(score);
        Py_XDECREF(rank);
        if (failed) {
            goto done;
        }
    }
    result = Py_BuildValue("(OO)", items, order);
done:
    Py_XDECREF(items);
    Py_XDECREF(order);
    PyMem_Free(ranked);
    PyBuffer_Release(&scores);
    PyBuffer_Release(&known);
    PyBuffer_Release(&pair);
    PyBuffer_Release(&described);
    return result;
}

/* The digits of a non-negative length. */
static Py_ssize_t digits(Py_ssize_t value) {
    Py_ssize_t count = 1;
    while (value >= 10) {
        value /= 10;
        count++;
    }
    return count;
}

/* Writes a RESP length line ("*<n>\r\n" or "$<n>\r\n") at `at`; returns the end. */
static char *put_line(char *at, char kind, Py_ssize_t value) {
    /* Digits written back to front: snprintf was 85 % of pack_keys' time. */
    Py_ssize_t size = digits(value);
    *at++ = kind;
    for (char *digit = at + size - 1; digit >= at; digit--) {
        *digit = (char)('0' + value % 10);
        value /= 10;
    }
    at += size;
    *at++ = '\r';
    *at++ = '\n';
    return at;
}

/* Writes one RESP bulk string ("$<len>\r\n<head><tail>\r\n") at `at`; returns the end. */
static char *put_bulk(char *at, const char *head, Py_ssize_t head_size, const char *tail,
                      Py_ssize_t tail_size) {
    at = put_line(at, '$', head_size + tail_size);
    memcpy(at, head, (size_t)head_size);
    memcpy(at + head_size, tail, (size_t)tail_size);
    at += head_size + tail_size;
    *at++ = '\r';
    *at++ = '\n';
    return at;
}

/* A segment's parts: a key alone (`ids` NULL), or a prefix and the ids it goes before. */
typedef struct {
    const char *key;
    Py_ssize_t key_size;
    PyObject *ids;
} Segment;

PyDoc_STRVAR(pack_keys_doc,
"pack_keys(command, segments) -> bytes\n\n"
"The RESP bytes of `command` followed by keys: each segment a key (str), or a (prefix, ids)\n"
"pair standing for prefix + id for each id (UTF-8, as hiredis.pack_command encodes them).");

static PyObject *pack_keys(PyObject *self, PyObject *args) {
    PyObject *command, *segments;
    if (!PyArg_ParseTuple(args, "UO!", &command, &PyList_Type, &segments)) {
        return NULL;
    }
    Py_ssize_t n_segments = PyList_GET_SIZE(segments), command_size;
    const char *command_at = PyUnicode_AsUTF8AndSize(command, &command_size);
    if (command_at == NULL) {
        return NULL;
    }
    Segment *parts = PyMem_Malloc(sizeof(Segment) * (size_t)(n_segments > 0 ? n_segments : 1));
    if (parts == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *out = NULL;
    /* Pass 1: the words and the bytes they take. */
    Py_ssize_t words = 1, size = 1 + digits(command_size) + 2 + command_size + 2;
    for (Py_ssize_t s = 0; s < n_segments; s++) {
        PyObject *segment = PyList_GET_ITEM(segments, s);
        PyObject *key = segment;
        parts[s].ids = NULL;
        if (PyTuple_Check(segment)) {
            if (PyTuple_GET_SIZE(segment) != 2 || !PyList_Check(PyTuple_GET_ITEM(segment, 1))) {
                PyErr_SetString(PyExc_TypeError, "a key group is a (prefix, list of ids) pair");
                goto done;
            }
            key = PyTuple_GET_ITEM(segment, 0);
            parts[s].ids = PyTuple_GET_ITEM(segment, 1);
        }
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys, prefixes and ids must be str");
            goto done;
        }
        parts[s].key = PyUnicode_AsUTF8AndSize(key, &parts[s].key_size);
        if (parts[s].key == NULL) {
            goto done;
        }
        if (parts[s].ids == NULL) {
            words++;
            size += 1 + digits(parts[s].key_size) + 2 + parts[s].key_size + 2;
            continue;
        }
        Py_ssize_t n_ids = PyList_GET_SIZE(parts[s].ids);
        for (Py_ssize_t i = 0; i < n_ids; i++) {
            PyObject *id = PyList_GET_ITEM(parts[s].ids, i);
            Py_ssize_t id_size;
            if (!PyUnicode_Check(id)) {
                PyErr_SetString(PyExc_TypeError, "keys, prefixes and ids must be str");
                goto done;
            }
            if (PyUnicode_AsUTF8AndSize(id, &id_size) == NULL) {
                goto done;
            }
            Py_ssize_t key_size = parts[s].key_size + id_size;
            size += 1 + digits(key_size) + 2 + key_size + 2;
        }
        words += n_ids;
    }
    size += 1 + digits(words) + 2;
    /* Pass 2: write them. */
    char *at = NULL;
    out = new_bytes(size, &at);
    if (out == NULL) {
        goto done;
    }
    char *start = at;
    at = put_line(at, '*', words);
    at = put_bulk(at, command_at, command_size, "", 0);
    for (Py_ssize_t s = 0; s < n_segments; s++) {
        if (parts[s].ids == NULL) {
            at = put_bulk(at, parts[s].key, parts[s].key_size, "", 0);
            continue;
        }
        Py_ssize_t n_ids = PyList_GET_SIZE(parts[s].ids);
        for (Py_ssize_t i = 0; i < n_ids; i++) {
            Py_ssize_t id_size;
            const char *id = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(parts[s].ids, i), &id_size);
            at = put_bulk(at, parts[s].key, parts[s].key_size, id, id_size);
        }
    }
    if (at - start != size) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_SystemError, "pack_keys: the command's size was miscounted");
        goto done;
    }
done:
    PyMem_Free(parts);
    return out;
}

/* A 1-D buffer of `itemsize`-byte elements, strided or not (a column of a structured array),
 * or an error naming `what`; element i lies at buf + i * strides[0]. */
static int get_column(PyObject *object, Py_buffer *view, Py_ssize_t itemsize, const char *what) {
    if (PyObject_GetBuffer(object, view, PyBUF_STRIDES) < 0) {
        return -1;
    }
    if (view->ndim != 1 || view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must be 1-D with %zd-byte elements", what, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Column `column` of an (N, F) int64 C-ordered buffer, checked against N. */
static int get_out_column(PyObject *object, Py_buffer *view, Py_ssize_t column, Py_ssize_t n) {
    if (PyObject_GetBuffer(object, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_ND) < 0) {
        return -1;
    }
    if (view->ndim != 2 || view->itemsize != 8 || view->shape[0] != n || column < 0 ||
        column >= view->shape[1]) {
        PyErr_SetString(PyExc_ValueError, "out must be (N, F) int64 with the column inside it");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(hash_buckets_doc,
"hash_buckets(out, column, hashes, buckets, keep)\n\n"
"out[:, column] = contract.FeatureField.buckets_of_hashes for a field of `buckets` buckets\n"
"(1 + hash % (buckets - 1)) where `keep` (bool (N,)) holds, else the missing bucket 0;\n"
"`hashes` u64 (N,); both may be strided (columns of a structured array).");

static PyObject *hash_buckets(PyObject *self, PyObject *args) {
    PyObject *out_obj, *hashes_obj, *keep_obj;
    Py_ssize_t column;
    unsigned long long buckets;
    if (!PyArg_ParseTuple(args, "OnOKO", &out_obj, &column, &hashes_obj, &buckets, &keep_obj)) {
        return NULL;
    }
    if (buckets < 2) {
        PyErr_SetString(PyExc_ValueError, "a hashed field needs buckets >= 2");
        return NULL;
    }
    Py_buffer hashes = {0}, keep = {0}, out = {0}; /* as in term_relevance */
    PyObject *result = NULL;
    if (get_column(hashes_obj, &hashes, 8, "hashes") < 0 ||
        get_column(keep_obj, &keep, 1, "keep") < 0) {
        goto done;
    }
    Py_ssize_t n = hashes.shape[0];
    if (keep.shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "hashes and keep differ in length");
        goto done;
    }
    if (get_out_column(out_obj, &out, column, n) < 0) {
        goto done;
    }
    int64_t *o = (int64_t *)out.buf + column;
    Py_ssize_t width = out.shape[1];
    uint64_t modulus = (uint64_t)buckets - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t hash;
        memcpy(&hash, (const char *)hashes.buf + i * hashes.strides[0], 8);
        char kept = *((const char *)keep.buf + i * keep.strides[0]);
        o[i * width] = kept ? (int64_t)(hash % modulus) + 1 : 0;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&keep);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(int_buckets_doc,
"int_buckets(out, column, values, buckets)\n\n"
"out[:, column] = contract.FeatureField.encode for a field of small integers (not hashed)\n"
"of `buckets` buckets: value + 1 for 0 <= value < buckets - 1, else the missing bucket 0;\n"
"`values` int32 (N,), strided or not.");

static PyObject *int_buckets(PyObject *self, PyObject *args) {
    PyObject *out_obj, *values_obj;
    Py_ssize_t column, buckets;
    if (!PyArg_ParseTuple(args, "OnOn", &out_obj, &column, &values_obj, &buckets)) {
        return NULL;
    }
    Py_buffer values, out;
    if (get_column(values_obj, &values, 4, "values") < 0) {
        return NULL;
    }
    Py_ssize_t n = values.shape[0];
    if (get_out_column(out_obj, &out, column, n) < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    int64_t *o = (int64_t *)out.buf + column;
    Py_ssize_t width = out.shape[1];
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t value;
        memcpy(&value, (const char *)values.buf + i * values.strides[0], 4);
        o[i * width] = value >= 0 && (Py_ssize_t)value < buckets - 1 ? (int64_t)value + 1 : 0;
    }
    PyBuffer_Release(&values);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(plain_item_ids_doc,
"plain_item_ids(candidates) -> list[str] | None\n\n"
"The candidates' ids if every candidate is exactly {'item_id': <a non-empty str>} and no id\n"
"repeats; else None (the body is not plain: the model's path validates it).");

static PyObject *plain_item_ids(PyObject *self, PyObject *args) {
    PyObject *candidates;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &candidates)) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(candidates);
    if (n == 0) {
        Py_RETURN_NONE;
    }
    PyObject *ids = PyList_New(n);
    PyObject *seen = PySet_New(NULL);
    if (ids == NULL || seen == NULL) {
        goto failed;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *candidate = PyList_GET_ITEM(candidates, i);
        if (!PyDict_CheckExact(candidate) || PyDict_GET_SIZE(candidate) != 1) {
            goto not_plain;
        }
        PyObject *id = PyDict_GetItemWithError(candidate, key_item_id);
        if (id == NULL) {
            if (PyErr_Occurred()) {
                goto failed;
            }
            goto not_plain;
        }
        if (!PyUnicode_CheckExact(id) || PyUnicode_GET_LENGTH(id) == 0) {
            goto not_plain;
        }
        Py_ssize_t before = PySet_GET_SIZE(seen);
        if (PySet_Add(seen, id) < 0) {
            goto failed;
        }
        if (PySet_GET_SIZE(seen) == before) { /* a repeat */
            goto not_plain;
        }
        Py_INCREF(id);
        PyList_SET_ITEM(ids, i, id);
    }
    Py_DECREF(seen);
    return ids;
not_plain:
    Py_DECREF(ids);
    Py_DECREF(seen);
    Py_RETURN_NONE;
failed:
    Py_XDECREF(ids);
    Py_XDECREF(seen);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split_items", split_items, METH_VARARGS, split_items_doc},
    {"term_relevance", term_relevance, METH_VARARGS, relevance_doc},
    {"ranked_items", ranked_items, METH_VARARGS, ranked_items_doc},
    {"pack_keys", pack_keys, METH_VARARGS, pack_keys_doc},
    {"hash_buckets", hash_buckets, METH_VARARGS, hash_buckets_doc},
    {"int_buckets", int_buckets, METH_VARARGS, int_buckets_doc},
    {"plain_item_ids", plain_item_ids, METH_VARARGS, plain_item_ids_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "service._kernels",
    .m_doc = "The request path's per-candidate loops in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    key_item_id = PyUnicode_InternFromString("item_id");
    key_score = PyUnicode_InternFromString("score");
    key_rank = PyUnicode_InternFromString("rank");
    key_flags = PyUnicode_InternFromString("flags");
    if (key_item_id == NULL || key_score == NULL || key_rank == NULL || key_flags == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
