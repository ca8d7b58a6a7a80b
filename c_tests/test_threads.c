/* Application threads against the C API (SPEC §2 "every function may be called from any
   thread", §4 Operations and Events):
   - shared_handle:  8 threads on ONE store handle (put/get/remove/count/for_each/put_many);
                     the final contents are exactly what the threads left.
   - own_handles:    the same with one handle per thread on one store directory.
   - close_race:     wm_license_store_close racing the other calls on the handle: they return
                     WM_S_OK or WM_E_HANDLE only, and WM_E_HANDLE once close has returned.
   - restorer_storm: threads creating, configuring, starting, cancelling and destroying
                     restorers: one BEGIN and one END per started operation, no callback after
                     destroy returned.
   - chained_start:  thread X starts the next operation while the END callback (which sleeps)
                     is still running: the next BEGIN comes only after that END returned.
   - spin_start:     thread X starts the next operation in a tight loop (retrying on BUSY), so
                     the start lands the instant the previous operation turns idle to deliver
                     END: that END still returns before the next BEGIN, callbacks never overlap.
   - mutual_destroy: two END callbacks destroy each other's restorer at the same time.
   - mutual_wait:    two END callbacks wait (WM_INFINITE) for each other's restorer.
   A case name as argument runs that case only. */
#include "thread_util.h"
#include "restorer_util.h"

#include <sched.h>

#define NTHREADS 8
#define MAXK 120

static char g_home[4096];
static char g_small_store[4200]; /* a few licenses with WM_RIGHT_BACKUP, for backups */

/* ================================================================ licenses of the store cases */

/* Thread t's license i at version ver (1..3): every field derives from (t, i, ver). */
typedef struct {
  char kid[32];
  uint8_t key[16];
  char title[64];
  wm_license lic;
} tlic;

static void make_lic(tlic *o, unsigned t, unsigned i, unsigned ver) {
  unsigned j;
  int len = snprintf(o->kid, sizeof o->kid, "t%02u-k%05u", t, i);
  for (j = 0; j < 16; j++) o->key[j] = (uint8_t)(t * 131u + i * 17u + j * 7u + 1u);
  snprintf(o->title, sizeof o->title, "thread %u key %u version %u", t, i, ver);
  memset(&o->lic, 0, sizeof o->lic);
  o->lic.key_id = (const uint8_t *)o->kid;
  o->lic.key_id_len = (size_t)len;
  o->lic.content_key = o->key;
  o->lic.content_key_len = sizeof o->key;
  o->lic.title = o->title;
  o->lic.rights = WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP;
  o->lic.play_count = (int32_t)ver;
  o->lic.begin_date = 0;
  o->lic.expiration_date = 0;
  o->lic.issued_at = 1700000000 + (int64_t)ver * 1000000 + (int64_t)t * 10000 + (int64_t)i;
}

/* True when `got` is exactly thread t's license i at version ver. */
static int lic_equals(const wm_license *got, unsigned t, unsigned i, unsigned ver) {
  tlic w;
  make_lic(&w, t, i, ver);
  return got->key_id_len == w.lic.key_id_len && memcmp(got->key_id, w.lic.key_id, got->key_id_len) == 0 &&
         got->content_key_len == w.lic.content_key_len &&
         memcmp(got->content_key, w.lic.content_key, got->content_key_len) == 0 && got->title &&
         strcmp(got->title, w.lic.title) == 0 && got->rights == w.lic.rights &&
         got->play_count == w.lic.play_count && got->begin_date == 0 && got->expiration_date == 0 &&
         got->issued_at == w.lic.issued_at;
}

/* Parses a key ID "tTT-kIIIII"; 1 on success. */
static int parse_kid(const uint8_t *kid, size_t len, unsigned *t, unsigned *i) {
  char buf[33];
  char tail;
  if (len == 0 || len > 32) return 0;
  memcpy(buf, kid, len);
  buf[len] = '\0';
  return sscanf(buf, "t%2u-k%5u%c", t, i, &tail) == 2;
}

typedef struct {
  unsigned t;
  wm_license_store *shared; /* NULL: the thread opens its own handle on dir */
  const char *dir;
  unsigned k;
  unsigned ver[MAXK]; /* 0 = absent */
} store_worker;

typedef struct {
  unsigned t, i, ver;
  int calls, ok;
} get_ctx;

static int32_t get_visit(const wm_license *l, void *context) {
  get_ctx *g = (get_ctx *)context;
  g->calls++;
  g->ok = lic_equals(l, g->t, g->i, g->ver);
  return 0;
}

/* for_each from thread t: every license is a consistent whole (no torn record), key IDs come
   in strictly ascending byte order, and t's own licenses are exactly what t left there (t is
   not changing them meanwhile; the snapshot must show them). */
typedef struct {
  store_worker *w;
  uint64_t visited, own;
  int torn, disorder, own_wrong;
  uint8_t prev[64];
  size_t prev_len;
} each_ctx;

static int32_t each_visit(const wm_license *l, void *context) {
  each_ctx *c = (each_ctx *)context;
  unsigned t, i;
  c->visited++;
  if (c->visited > 1) {
    size_t n = c->prev_len < l->key_id_len ? c->prev_len : l->key_id_len;
    int cmp = memcmp(c->prev, l->key_id, n);
    if (cmp > 0 || (cmp == 0 && c->prev_len >= l->key_id_len)) c->disorder++;
  }
  c->prev_len = l->key_id_len <= 64 ? l->key_id_len : 64;
  memcpy(c->prev, l->key_id, c->prev_len);
  if (!parse_kid(l->key_id, l->key_id_len, &t, &i) || t >= NTHREADS || i >= MAXK || l->play_count < 1 ||
      l->play_count > 3 || !lic_equals(l, t, i, (unsigned)l->play_count)) {
    c->torn++;
    return 0;
  }
  if (t == c->w->t) {
    c->own++;
    if (c->w->ver[i] != (unsigned)l->play_count) c->own_wrong++;
  }
  return 0;
}

static unsigned own_present(const store_worker *w) {
  unsigned i, n = 0;
  for (i = 0; i < w->k; i++) n += w->ver[i] != 0;
  return n;
}

static void check_for_each(store_worker *w, wm_license_store *s) {
  each_ctx c;
  memset(&c, 0, sizeof c);
  c.w = w;
  if (!TCHECK_HR(wm_license_store_for_each(s, each_visit, &c), WM_S_OK)) return;
  if (c.torn || c.disorder || c.own_wrong || c.own != own_present(w))
    wmth_fail(__FILE__, __LINE__,
              "thread %u: for_each saw %d torn/unknown license(s), %d out of order, %d own at a wrong "
              "version, %llu own licenses instead of %u",
              w->t, c.torn, c.disorder, c.own_wrong, (unsigned long long)c.own, own_present(w));
}

static void check_get(store_worker *w, wm_license_store *s, unsigned i) {
  tlic l;
  get_ctx g;
  make_lic(&l, w->t, i, w->ver[i] ? w->ver[i] : 1);
  memset(&g, 0, sizeof g);
  g.t = w->t;
  g.i = i;
  g.ver = w->ver[i];
  if (w->ver[i] == 0) {
    TCHECK_HR(wm_license_store_get(s, l.lic.key_id, l.lic.key_id_len, get_visit, &g), WM_E_NOT_FOUND);
    TCHECK(g.calls == 0);
    return;
  }
  if (TCHECK_HR(wm_license_store_get(s, l.lic.key_id, l.lic.key_id_len, get_visit, &g), WM_S_OK) &&
      !(g.calls == 1 && g.ok))
    wmth_fail(__FILE__, __LINE__, "thread %u: get of key %u (version %u): %d visit(s), match %d", w->t, i,
              w->ver[i], g.calls, g.ok);
}

static void check_count(store_worker *w, wm_license_store *s) {
  uint64_t n = UINT64_MAX;
  if (TCHECK_HR(wm_license_store_count(s, &n), WM_S_OK) &&
      (n < own_present(w) || n > (uint64_t)NTHREADS * w->k))
    wmth_fail(__FILE__, __LINE__, "thread %u: count %llu is impossible (own %u, at most %u)", w->t,
              (unsigned long long)n, own_present(w), NTHREADS * w->k);
}

static void *store_worker_main(void *arg) {
  store_worker *w = (store_worker *)arg;
  wm_license_store *s = w->shared;
  tlic *b;
  unsigned i;
  if (!s && !TCHECK_HR(wm_license_store_open(w->dir, &s), WM_S_OK)) return NULL;
  b = (tlic *)calloc(10, sizeof *b);
  if (!b) abort();

  /* 1. put each license, read it back; count and for_each now and then */
  for (i = 0; i < w->k; i++) {
    tlic l;
    make_lic(&l, w->t, i, 1);
    if (TCHECK_HR(wm_license_store_put(s, &l.lic), WM_S_OK)) w->ver[i] = 1;
    check_get(w, s, i);
    if (i % 8 == 0) check_count(w, s);
    if (i == w->k / 2) check_for_each(w, s);
  }
  /* 2. update them all to version 2 in put_many batches of 10 */
  for (i = 0; i < w->k; i += 10) {
    wm_license ls[10];
    unsigned j, n = w->k - i < 10 ? w->k - i : 10;
    for (j = 0; j < n; j++) {
      make_lic(&b[j], w->t, i + j, 2);
      ls[j] = b[j].lic;
    }
    if (TCHECK_HR(wm_license_store_put_many(s, ls, n), WM_S_OK))
      for (j = 0; j < n; j++) w->ver[i + j] = 2;
    check_get(w, s, i + n - 1);
    if (i == (w->k / 20) * 10) check_for_each(w, s);
  }
  /* 3. remove every third; a second remove finds nothing */
  for (i = 0; i < w->k; i += 3) {
    tlic l;
    make_lic(&l, w->t, i, 2);
    if (TCHECK_HR(wm_license_store_remove(s, l.lic.key_id, l.lic.key_id_len), WM_S_OK)) w->ver[i] = 0;
    check_get(w, s, i);
    TCHECK_HR(wm_license_store_remove(s, l.lic.key_id, l.lic.key_id_len), WM_E_NOT_FOUND);
    if (i % 30 == 0) check_count(w, s);
  }
  /* 4. put back every ninth at version 3 */
  for (i = 0; i < w->k; i += 9) {
    tlic l;
    make_lic(&l, w->t, i, 3);
    if (TCHECK_HR(wm_license_store_put(s, &l.lic), WM_S_OK)) w->ver[i] = 3;
    check_get(w, s, i);
  }
  check_for_each(w, s);
  check_count(w, s);
  free(b);
  if (!w->shared) wm_license_store_close(s);
  return NULL;
}

/* The version thread t's license i must have at the end (0 = absent). */
static unsigned final_version(unsigned i) {
  if (i % 9 == 0) return 3;
  if (i % 3 == 0) return 0;
  return 2;
}

/* The store at dir holds exactly the final licenses of every thread, field by field. */
static void check_final_store(const char *dir, unsigned k, const char *label) {
  wmr_dump_t d;
  unsigned t, i, expected = 0, wrong = 0, missing = 0;
  wm_hresult hr = wmr_dump(dir, &d);
  if (!TCHECK_HR(hr, WM_S_OK)) return;
  for (t = 0; t < NTHREADS; t++) {
    for (i = 0; i < k; i++) {
      unsigned ver = final_version(i);
      tlic l;
      const wmr_lic *got;
      make_lic(&l, t, i, ver ? ver : 1);
      got = wmr_dump_find(&d, l.lic.key_id, l.lic.key_id_len);
      if (!ver) {
        if (got) wrong++;
        continue;
      }
      expected++;
      if (!got)
        missing++;
      else if (!wmr_lic_is(got, &l.lic))
        wrong++;
    }
  }
  if (d.n != expected || wrong || missing)
    wmth_fail(__FILE__, __LINE__, "%s: the store holds %zu licenses, expected %u; %u missing, %u wrong or not removed",
              label, d.n, expected, missing, wrong);
  else
    printf("  %s: final store exact (%u licenses)\n", label, expected);
  wmr_dump_free(&d);
}

static void run_store_threads(int shared) {
  static store_worker w[NTHREADS];
  pthread_t th[NTHREADS];
  char dir[4200];
  wm_license_store *s = NULL;
  unsigned t, k = wms_quick() ? 24 : MAXK;
  double t0 = wms_now_ms();
  const char *label = shared ? "shared_handle" : "own_handles";
  snprintf(dir, sizeof dir, "%s/%s", g_home, shared ? "store-shared" : "store-own");
  REQUIRE_OK(wm_license_store_open(dir, &s));
  for (t = 0; t < NTHREADS; t++) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].t = t;
    w[t].k = k;
    w[t].dir = dir;
    w[t].shared = shared ? s : NULL;
  }
  for (t = 0; t < NTHREADS; t++) th[t] = wmth_start(store_worker_main, &w[t]);
  for (t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
  if (shared) {
    uint64_t n = 0, expected = 0;
    unsigned i;
    for (i = 0; i < k; i++) expected += final_version(i) != 0;
    expected *= NTHREADS;
    TCHECK_HR(wm_license_store_count(s, &n), WM_S_OK);
    if (n != expected)
      wmth_fail(__FILE__, __LINE__, "%s: count %llu, expected %llu", label, (unsigned long long)n,
                (unsigned long long)expected);
  }
  wm_license_store_close(s);
  printf("  %s: %d threads x %u keys in %.0f ms\n", label, NTHREADS, k, wms_now_ms() - t0);
  check_final_store(dir, k, label);
}

static void case_shared_handle(void) { run_store_threads(1); }
static void case_own_handles(void) { run_store_threads(0); }

/* ================================================================ close racing other calls */

static wmth_flag g_close_started = WMTH_FLAG_INIT, g_close_returned = WMTH_FLAG_INIT,
                 g_race_ready = WMTH_FLAG_INIT;

typedef struct {
  unsigned round, t;
  wm_license_store *s;
  /* keys this thread put successfully and did not remove successfully */
  char (*present)[32];
  size_t npresent, cap;
  int saw_handle;
  unsigned iterations;
} race_worker;

static void race_keep(race_worker *w, const char *kid) {
  if (w->npresent == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 64;
    char(*p)[32] = (char(*)[32])realloc(w->present, cap * sizeof *p);
    if (!p) abort();
    w->present = p;
    w->cap = cap;
  }
  {
    size_t len = strlen(kid) < 31 ? strlen(kid) : 31;
    memcpy(w->present[w->npresent], kid, len);
    w->present[w->npresent++][len] = '\0';
  }
}

static void race_forget(race_worker *w, const char *kid) {
  size_t i;
  for (i = 0; i < w->npresent; i++) {
    if (strcmp(w->present[i], kid) == 0) {
      memmove(&w->present[i], &w->present[i + 1], (w->npresent - i - 1) * sizeof w->present[0]);
      w->npresent--;
      return;
    }
  }
}

static void race_lic(wm_license *l, char kid[32], uint8_t key[16], unsigned round, unsigned t, unsigned n) {
  unsigned j;
  int len = snprintf(kid, 32, "c%02u-%02u-%07u", round, t, n);
  for (j = 0; j < 16; j++) key[j] = (uint8_t)(round + t * 3u + n * 5u + j);
  memset(l, 0, sizeof *l);
  l->key_id = (const uint8_t *)kid;
  l->key_id_len = (size_t)len;
  l->content_key = key;
  l->content_key_len = 16;
  l->rights = WM_RIGHT_PLAYBACK;
  l->play_count = -1;
  l->issued_at = 1700000000;
}

/* Stops after 16 licenses: the store grows over the rounds, the race is with the call. */
static int32_t race_visit(const wm_license *l, void *context) {
  (void)l;
  return ++*(unsigned *)context >= 16;
}

/* Checks one call's result: WM_S_OK or WM_E_HANDLE while close races, WM_E_HANDLE once close has
   returned (closed_before: close had returned before the call began) or once this thread saw
   WM_E_HANDLE. Returns 1 for WM_S_OK. */
static int race_hr(race_worker *w, wm_hresult hr, int closed_before, const char *what) {
  if (hr == WM_E_HANDLE) {
    w->saw_handle = 1;
    return 0;
  }
  if (hr != WM_S_OK) {
    wmth_fail(__FILE__, __LINE__, "round %u thread %u: %s returned 0x%08x (%s) while close raced; only "
              "WM_S_OK or WM_E_HANDLE are allowed", w->round, w->t, what, (unsigned)hr, wm_hresult_message(hr));
    return 0;
  }
  if (closed_before || w->saw_handle) {
    wmth_fail(__FILE__, __LINE__, "round %u thread %u: %s returned WM_S_OK after %s", w->round, w->t, what,
              closed_before ? "wm_license_store_close had returned" : "an earlier call returned WM_E_HANDLE");
    return 0;
  }
  return 1;
}

static void *race_main(void *arg) {
  race_worker *w = (race_worker *)arg;
  unsigned n = 0, after = 0;
  int announced = 0;
  while (after < 12 && w->iterations < 200000) {
    wm_license l, many[3];
    char kid[32], mkid[3][32];
    uint8_t key[16], mkey[3][16];
    uint64_t count;
    unsigned visits = 0, j;
    int closed = wmth_flag_get(&g_close_returned);
    get_ctx g;
    race_lic(&l, kid, key, w->round, w->t, n++);
    if (race_hr(w, wm_license_store_put(w->s, &l), closed, "put")) race_keep(w, kid);
    memset(&g, 0, sizeof g);
    race_hr(w, wm_license_store_get(w->s, l.key_id, l.key_id_len, get_visit, &g), closed, "get");
    race_hr(w, wm_license_store_count(w->s, &count), closed, "count");
    if (w->iterations % 4 == 0)
      race_hr(w, wm_license_store_for_each(w->s, race_visit, &visits), closed, "for_each");
    for (j = 0; j < 3; j++) race_lic(&many[j], mkid[j], mkey[j], w->round, w->t, n++);
    if (race_hr(w, wm_license_store_put_many(w->s, many, 3), closed, "put_many"))
      for (j = 0; j < 3; j++) race_keep(w, mkid[j]);
    if (race_hr(w, wm_license_store_remove(w->s, l.key_id, l.key_id_len), closed, "remove")) race_forget(w, kid);
    w->iterations++;
    if (!announced) {
      announced = 1;
      wmth_flag_add(&g_race_ready, 1);
    }
    if (closed) after++;
  }
  if (!announced) wmth_flag_add(&g_race_ready, 1);
  if (!w->saw_handle)
    wmth_fail(__FILE__, __LINE__, "round %u thread %u: never saw WM_E_HANDLE after close", w->round, w->t);
  return NULL;
}

static void *second_close_main(void *arg) {
  wmth_flag_wait(&g_close_started, 1, 60000);
  wm_license_store_close((wm_license_store *)arg);
  return NULL;
}

static void case_close_race(void) {
  enum { RACERS = 8 };
  static race_worker w[RACERS];
  pthread_t th[RACERS], closer2;
  char dir[4200];
  unsigned round, rounds = wms_quick() ? 4 : 24, t;
  size_t expected = 0, missing = 0;
  unsigned total_iterations = 0;
  wmr_dump_t d;
  snprintf(dir, sizeof dir, "%s/store-close-race", g_home);
  /* Every round's surviving keys, gathered for the final check. */
  char(*all)[32] = NULL;
  size_t nall = 0, capall = 0;
  for (round = 0; round < rounds; round++) {
    wm_license_store *s = NULL;
    uint64_t count;
    unsigned visits = 0;
    wm_license l;
    char kid[32];
    uint8_t key[16];
    int two_closers = round % 2 == 1;
    REQUIRE_OK(wm_license_store_open(dir, &s));
    wmth_flag_set(&g_close_started, 0);
    wmth_flag_set(&g_close_returned, 0);
    wmth_flag_set(&g_race_ready, 0);
    for (t = 0; t < RACERS; t++) {
      free(w[t].present);
      memset(&w[t], 0, sizeof w[t]);
      w[t].round = round;
      w[t].t = t;
      w[t].s = s;
      th[t] = wmth_start(race_main, &w[t]);
    }
    if (two_closers) closer2 = wmth_start(second_close_main, s);
    if (!wmth_flag_wait(&g_race_ready, RACERS, 60000))
      wmth_fail(__FILE__, __LINE__, "round %u: the threads did not get going", round);
    wms_sleep_ms(round % 7);
    wmth_flag_set(&g_close_started, 1);
    wm_license_store_close(s);
    wmth_flag_set(&g_close_returned, 1);
    /* After close returned, everything answers WM_E_HANDLE. */
    race_lic(&l, kid, key, round, 99, 0);
    TCHECK_HR(wm_license_store_put(s, &l), WM_E_HANDLE);
    TCHECK_HR(wm_license_store_put_many(s, &l, 1), WM_E_HANDLE);
    TCHECK_HR(wm_license_store_get(s, l.key_id, l.key_id_len, race_visit, &visits), WM_E_HANDLE);
    TCHECK_HR(wm_license_store_remove(s, l.key_id, l.key_id_len), WM_E_HANDLE);
    TCHECK_HR(wm_license_store_count(s, &count), WM_E_HANDLE);
    TCHECK_HR(wm_license_store_for_each(s, race_visit, &visits), WM_E_HANDLE);
    TCHECK(visits == 0);
    for (t = 0; t < RACERS; t++) pthread_join(th[t], NULL);
    if (two_closers) pthread_join(closer2, NULL);
    wm_license_store_close(s); /* closed already: does nothing */
    wm_license_store_close(NULL);
    for (t = 0; t < RACERS; t++) {
      size_t i;
      total_iterations += w[t].iterations;
      for (i = 0; i < w[t].npresent; i++) {
        if (nall == capall) {
          size_t cap = capall ? capall * 2 : 256;
          char(*p)[32] = (char(*)[32])realloc(all, cap * sizeof *p);
          if (!p) abort();
          all = p;
          capall = cap;
        }
        memcpy(all[nall++], w[t].present[i], 32);
      }
    }
  }
  for (t = 0; t < RACERS; t++) {
    free(w[t].present);
    w[t].present = NULL;
  }
  /* What a call reported as done is in the store, and nothing else. */
  if (TCHECK_HR(wmr_dump(dir, &d), WM_S_OK)) {
    size_t i;
    expected = nall;
    for (i = 0; i < nall; i++)
      if (!wmr_dump_find(&d, (const uint8_t *)all[i], strlen(all[i]))) missing++;
    if (d.n != expected || missing)
      wmth_fail(__FILE__, __LINE__, "close_race: the store holds %zu licenses, the calls that returned WM_S_OK "
                "left %zu; %zu of those missing", d.n, expected, missing);
    wmr_dump_free(&d);
  }
  free(all);
  printf("  close_race: %u rounds, %u iterations before/around close, %zu licenses survive\n", rounds,
         total_iterations, expected);
}

/* ================================================================ restorer storm */

typedef struct {
  pthread_mutex_t mu;
  int begins, ends, inside, overlaps, bad_order, bad_end, after_destroy, idle, destroyed;
  wm_hresult bad_end_hr;
} storm_ctx;

static void storm_cb(const wm_event *e, void *context) {
  storm_ctx *c = (storm_ctx *)context;
  pthread_mutex_lock(&c->mu);
  if (c->destroyed) c->after_destroy++;
  if (c->inside) c->overlaps++;
  c->inside = 1;
  if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) {
    if (!c->idle) c->bad_order++;
    c->idle = 0;
    c->begins++;
  } else if (e->status == WM_STATUS_BACKUPRESTORE_END) {
    if (c->idle) c->bad_order++;
    c->idle = 1;
    c->ends++;
    if (e->hr != WM_S_OK && e->hr != WM_E_OPERATION_CANCELED) {
      c->bad_end++;
      c->bad_end_hr = e->hr;
    }
  } else if (c->idle) {
    c->bad_order++;
  }
  pthread_mutex_unlock(&c->mu);
  sched_yield(); /* widen the window in which an overlapping callback would be seen */
  pthread_mutex_lock(&c->mu);
  c->inside = 0;
  pthread_mutex_unlock(&c->mu);
}

typedef struct {
  unsigned t, iterations;
  char backup_dir[4200];
  storm_ctx *ctx; /* one per iteration, kept until the end of the case */
  unsigned started;
} storm_worker;

static void storm_check_props(wm_backup_restorer *r, const char *backup_dir) {
  uint32_t n = 0, type = 99, len = 0, name_len = 0;
  char buf[4200], name[64];
  TCHECK_HR(wms_set_prop(r, WM_PROP_RESTORE_PATH, "/nonexistent/backup"), WM_S_OK);
  TCHECK_HR(wm_backup_restorer_get_prop_count(r, &n), WM_S_OK);
  TCHECK(n == 3);
  TCHECK_HR(wm_backup_restorer_remove_prop(r, "restorepath"), WM_S_OK);
  TCHECK_HR(wm_backup_restorer_remove_prop(r, WM_PROP_RESTORE_PATH), WM_E_NOT_FOUND);
  TCHECK_HR(wm_backup_restorer_get_prop_count(r, &n), WM_S_OK);
  TCHECK(n == 2);
  len = sizeof buf;
  if (TCHECK_HR(wm_backup_restorer_get_prop_by_name(r, "BACKUPPATH", &type, (uint8_t *)buf, &len), WM_S_OK)) {
    TCHECK(type == WM_TYPE_STRING);
    TCHECK(len == strlen(backup_dir) + 1 && strcmp(buf, backup_dir) == 0);
  }
  name_len = sizeof name;
  len = sizeof buf;
  if (TCHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0, name, &name_len, &type, (uint8_t *)buf, &len), WM_S_OK))
    TCHECK(strcmp(name, WM_PROP_BACKUP_PATH) == 0 && strcmp(buf, backup_dir) == 0);
}

static void *storm_main(void *arg) {
  storm_worker *w = (storm_worker *)arg;
  unsigned j;
  for (j = 0; j < w->iterations; j++) {
    storm_ctx *c = &w->ctx[j];
    wm_backup_restorer *r = NULL;
    unsigned started = 0, mode = (w->t + j) % 5;
    wm_hresult hr;
    if (!TCHECK_HR(wm_backup_restorer_create(storm_cb, c, &r), WM_S_OK)) continue;
    TCHECK_HR(wms_set_prop(r, WM_PROP_BACKUP_PATH, w->backup_dir), WM_S_OK);
    TCHECK_HR(wms_set_prop(r, WM_PROP_STORE_PATH, g_small_store), WM_S_OK);
    storm_check_props(r, w->backup_dir);
    if (TCHECK_HR(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE), WM_S_OK)) started++;
    switch (mode) {
      case 0: /* destroy at once: it cancels */
        break;
      case 1:
        TCHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
        break;
      case 2:
        hr = wm_backup_restorer_cancel_backup(r);
        if (hr != WM_S_OK && hr != WM_S_FALSE) TCHECK_HR(hr, WM_S_OK);
        break;
      case 3: /* a second operation after the first, destroyed while it runs */
        TCHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
        if (TCHECK_HR(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE), WM_S_OK)) started++;
        break;
      default: /* a second start at once: busy, unless the first one is over already */
        hr = wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE);
        if (hr == WM_S_OK)
          started++;
        else
          TCHECK_HR(hr, WM_E_BACKUPRESTORE_BUSY);
        storm_check_props(r, w->backup_dir);
        TCHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
        break;
    }
    wm_backup_restorer_destroy(r);
    pthread_mutex_lock(&c->mu);
    c->destroyed = 1;
    if (c->begins != (int)started || c->ends != (int)started || c->inside)
      wmth_fail(__FILE__, __LINE__, "thread %u restorer %u (mode %u): %u operation(s) started, %d BEGIN and %d "
                "END when destroy returned%s", w->t, j, mode, started, c->begins, c->ends,
                c->inside ? ", a callback still running" : "");
    pthread_mutex_unlock(&c->mu);
    w->started += started;
  }
  return NULL;
}

static void case_restorer_storm(void) {
  static storm_worker w[NTHREADS];
  pthread_t th[NTHREADS];
  unsigned t, j, iterations = wms_quick() ? 3 : 12, started = 0;
  int after = 0, overlaps = 0, bad_order = 0, bad_end = 0;
  wm_hresult bad_hr = WM_S_OK;
  double t0 = wms_now_ms();
  for (t = 0; t < NTHREADS; t++) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].t = t;
    w[t].iterations = iterations;
    snprintf(w[t].backup_dir, sizeof w[t].backup_dir, "%s/storm-backup-%u", g_home, t);
    w[t].ctx = (storm_ctx *)calloc(iterations, sizeof *w[t].ctx);
    if (!w[t].ctx) abort();
    for (j = 0; j < iterations; j++) {
      pthread_mutex_init(&w[t].ctx[j].mu, NULL);
      w[t].ctx[j].idle = 1;
    }
  }
  for (t = 0; t < NTHREADS; t++) th[t] = wmth_start(storm_main, &w[t]);
  for (t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
  /* A late callback would show up here. */
  wms_sleep_ms(300);
  for (t = 0; t < NTHREADS; t++) {
    for (j = 0; j < iterations; j++) {
      storm_ctx *c = &w[t].ctx[j];
      pthread_mutex_lock(&c->mu);
      after += c->after_destroy;
      overlaps += c->overlaps;
      bad_order += c->bad_order;
      bad_end += c->bad_end;
      if (c->bad_end) bad_hr = c->bad_end_hr;
      pthread_mutex_unlock(&c->mu);
      pthread_mutex_destroy(&c->mu);
    }
    free(w[t].ctx);
    started += w[t].started;
  }
  if (after) wmth_fail(__FILE__, __LINE__, "restorer_storm: %d callback(s) ran after destroy had returned", after);
  if (overlaps) wmth_fail(__FILE__, __LINE__, "restorer_storm: %d callback(s) of one restorer ran concurrently", overlaps);
  if (bad_order) wmth_fail(__FILE__, __LINE__, "restorer_storm: %d event(s) out of BEGIN ... END order", bad_order);
  if (bad_end)
    wmth_fail(__FILE__, __LINE__, "restorer_storm: %d END(s) neither S_OK nor CANCELED (e.g. 0x%08x %s)", bad_end,
              (unsigned)bad_hr, wm_hresult_message(bad_hr));
  printf("  restorer_storm: %u restorers, %u operations in %.0f ms\n", NTHREADS * iterations, started,
         wms_now_ms() - t0);
}

/* ================================================================ chained start from another thread */

typedef struct {
  int status;
  long enter, exit; /* sequence numbers of callback entry and return (0: not returned) */
} chain_ev;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  chain_ev *ev;
  size_t n, cap;
  long seq;
  int inside;
  int overlaps;
  char first_overlap[160];
  int ends_entered, ends_returned;
  unsigned sleep_ms;
} ch = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, 0, 0, "", 0, 0, 50};

static void chain_cb(const wm_event *e, void *context) {
  size_t idx;
  int is_end = e->status == WM_STATUS_BACKUPRESTORE_END;
  (void)context;
  pthread_mutex_lock(&ch.mu);
  if (ch.inside) {
    if (!ch.overlaps)
      snprintf(ch.first_overlap, sizeof ch.first_overlap,
               "%s entered while %s (event %zu) was still inside the callback", wmt_status_name(e->status),
               wmt_status_name(ch.ev[ch.n - 1].status), ch.n - 1);
    ch.overlaps++;
  }
  ch.inside++;
  if (ch.n == ch.cap) {
    size_t cap = ch.cap ? ch.cap * 2 : 1024;
    chain_ev *p = (chain_ev *)realloc(ch.ev, cap * sizeof *p);
    if (!p) abort();
    ch.ev = p;
    ch.cap = cap;
  }
  idx = ch.n++;
  ch.ev[idx].status = (int)e->status;
  ch.ev[idx].enter = ++ch.seq;
  ch.ev[idx].exit = 0;
  if (is_end) {
    if (e->hr != WM_S_OK)
      wmth_fail(__FILE__, __LINE__, "chained_start: END %d carries 0x%08x (%s): %s", ch.ends_entered, (unsigned)e->hr,
                wm_hresult_message(e->hr), e->message ? e->message : "");
    ch.ends_entered++;
    pthread_cond_broadcast(&ch.cv);
  }
  pthread_mutex_unlock(&ch.mu);

  /* Stay inside END while thread X starts the next operation. */
  if (is_end) wms_sleep_ms(ch.sleep_ms);

  pthread_mutex_lock(&ch.mu);
  ch.ev[idx].exit = ++ch.seq;
  ch.inside--;
  if (is_end) {
    ch.ends_returned++;
    pthread_cond_broadcast(&ch.cv);
  }
  pthread_mutex_unlock(&ch.mu);
}

/* Waits until ch.<field> >= value; 0 on timeout. */
static int chain_wait(int *field, int value, unsigned timeout_ms) {
  struct timespec d = wmth_deadline(timeout_ms);
  int ok = 1;
  pthread_mutex_lock(&ch.mu);
  while (*field < value) {
    if (pthread_cond_timedwait(&ch.cv, &ch.mu, &d) != 0 && *field < value) {
      ok = 0;
      break;
    }
  }
  pthread_mutex_unlock(&ch.mu);
  return ok;
}

static int chain_get(int *field) {
  int v;
  pthread_mutex_lock(&ch.mu);
  v = *field;
  pthread_mutex_unlock(&ch.mu);
  return v;
}

typedef struct {
  wm_backup_restorer *r;
  int ops;
  int started_inside_end; /* starts that returned S_OK while the END before was still running */
  int busy_retries;
  int busy_inside_end;    /* BUSY answers that came while END was being delivered */
  int failed;
} chain_x;

/* Thread X: for each END k, start operation k+1 while END k is inside the callback. */
static void *chain_x_main(void *arg) {
  chain_x *x = (chain_x *)arg;
  int k;
  for (k = 1; k < x->ops && !x->failed; k++) {
    double give_up;
    if (!chain_wait(&ch.ends_entered, k, wmth_limit_ms(30000))) {
      wmth_fail(__FILE__, __LINE__, "chained_start: END %d never came", k);
      x->failed = 1;
      break;
    }
    give_up = wms_now_ms() + wmth_limit_ms(10000);
    for (;;) {
      wm_hresult hr = wm_backup_restorer_backup(x->r, WM_BACKUP_OVERWRITE);
      int still_inside = chain_get(&ch.ends_returned) < k;
      if (hr == WM_S_OK) {
        x->started_inside_end += still_inside;
        break;
      }
      if (hr == WM_E_BACKUPRESTORE_BUSY && wms_now_ms() < give_up) {
        x->busy_retries++;
        x->busy_inside_end += still_inside;
        wms_sleep_ms(1);
        continue;
      }
      TCHECK_HR(hr, WM_S_OK);
      x->failed = 1;
      break;
    }
  }
  return NULL;
}

static void case_chained_start(void) {
  wm_backup_restorer *r = NULL;
  chain_x x;
  pthread_t tx;
  char dir[4200];
  size_t i, begins = 0, ends = 0, order_bad = 0, begin_before_end_returned = 0;
  long last_end_exit = 0;
  int op = -1, in_op = 0;
  double t0 = wms_now_ms();
  memset(&x, 0, sizeof x);
  x.ops = wms_quick() ? 30 : 200;
  snprintf(dir, sizeof dir, "%s/chain-backup", g_home);
  REQUIRE_OK(wm_backup_restorer_create(chain_cb, NULL, &r));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_BACKUP_PATH, dir));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, g_small_store));
  x.r = r;
  tx = wmth_start(chain_x_main, &x);
  REQUIRE_OK(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE));
  pthread_join(tx, NULL);
  if (!x.failed && !chain_wait(&ch.ends_returned, x.ops, wmth_limit_ms(30000)))
    wmth_fail(__FILE__, __LINE__, "chained_start: %d END callbacks returned, expected %d", chain_get(&ch.ends_returned),
              x.ops);
  TCHECK_HR(wm_backup_restorer_wait(r, wmth_limit_ms(30000)), WM_S_OK);
  wm_backup_restorer_destroy(r);

  pthread_mutex_lock(&ch.mu);
  for (i = 0; i < ch.n; i++) {
    const chain_ev *e = &ch.ev[i];
    if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) {
      if (in_op) order_bad++;
      in_op = 1;
      op++;
      begins++;
      /* The next operation's BEGIN only after the previous END has returned. */
      if (op > 0 && (last_end_exit == 0 || e->enter < last_end_exit)) {
        if (!begin_before_end_returned)
          wmth_fail(__FILE__, __LINE__, "chained_start: BEGIN of operation %d entered (seq %ld) before END of "
                    "operation %d had returned (seq %ld)", op, e->enter, op - 1, last_end_exit);
        begin_before_end_returned++;
      }
    } else if (e->status == WM_STATUS_BACKUPRESTORE_END) {
      if (!in_op) order_bad++;
      in_op = 0;
      ends++;
      last_end_exit = e->exit;
    } else if (!in_op) {
      order_bad++;
    }
  }
  if (ch.overlaps)
    wmth_fail(__FILE__, __LINE__, "chained_start: %d callback(s) entered while another callback of the restorer "
              "was inside; first: %s", ch.overlaps, ch.first_overlap);
  if (begin_before_end_returned)
    wmth_fail(__FILE__, __LINE__, "chained_start: %zu of %d chained BEGINs came before the previous END returned",
              begin_before_end_returned, x.ops - 1);
  if (order_bad || begins != (size_t)x.ops || ends != (size_t)x.ops)
    wmth_fail(__FILE__, __LINE__, "chained_start: %zu BEGIN, %zu END for %d operations, %zu event(s) out of "
              "BEGIN ... END, BEGIN ... END order", begins, ends, x.ops, order_bad);
  /* While END is being delivered the restorer is idle: a start is never BUSY then. */
  if (x.busy_inside_end)
    wmth_fail(__FILE__, __LINE__, "chained_start: %d start(s) answered WM_E_BACKUPRESTORE_BUSY while END was being "
              "delivered (the restorer is idle then)", x.busy_inside_end);
  printf("  chained_start: %d operations in %.0f ms; %d of %d next starts returned while END was still inside the "
         "callback, %d BUSY retries\n", x.ops, wms_now_ms() - t0, x.started_inside_end, x.ops - 1, x.busy_retries);
  free(ch.ev);
  ch.ev = NULL;
  ch.n = ch.cap = 0;
  pthread_mutex_unlock(&ch.mu);
}

/* ================================================================ spinning start from another thread */

/* An application thread calls wm_backup_restorer_backup in a tight loop, retrying on
   WM_E_BACKUPRESTORE_BUSY, so that each start lands at the first instant the restorer accepts
   it: the moment the previous operation turns idle to deliver its END. The next BEGIN must
   still wait until that END has returned, and no two callbacks of the restorer may overlap.
   A library that marks the restorer idle before it holds the right to deliver END lets such a
   start reach another worker first; the window is short, so this catches it when the worker
   delivering END is held up there (preempted), not on every run. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long seq;
  int inside, overlaps;
  int begins, ends_entered, ends_returned;
  int early_begins;       /* BEGINs entered before the previous END had returned */
  int bad_ends;
  char first_problem[200];
} sp = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0, ""};

static void spin_cb(const wm_event *e, void *context) {
  long enter;
  (void)context;
  pthread_mutex_lock(&sp.mu);
  enter = ++sp.seq;
  if (sp.inside) {
    sp.overlaps++;
    if (!sp.first_problem[0])
      snprintf(sp.first_problem, sizeof sp.first_problem, "%s entered (seq %ld) while another callback of the "
               "restorer was inside", wmt_status_name(e->status), enter);
  }
  sp.inside++;
  if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) {
    /* Operation number sp.begins (0-based) begins: every END before it must have returned. */
    if (sp.ends_returned < sp.begins) {
      sp.early_begins++;
      if (!sp.first_problem[0])
        snprintf(sp.first_problem, sizeof sp.first_problem, "BEGIN of operation %d entered (seq %ld) before the "
                 "END of operation %d had returned", sp.begins, enter, sp.begins - 1);
    }
    sp.begins++;
  } else if (e->status == WM_STATUS_BACKUPRESTORE_END) {
    if (e->hr != WM_S_OK) {
      if (!sp.bad_ends)
        wmth_fail(__FILE__, __LINE__, "spin_start: END %d carries 0x%08x (%s): %s", sp.ends_entered,
                  (unsigned)e->hr, wm_hresult_message(e->hr), e->message ? e->message : "");
      sp.bad_ends++;
    }
    sp.ends_entered++;
    pthread_cond_broadcast(&sp.cv);
  }
  pthread_mutex_unlock(&sp.mu);

  sched_yield(); /* widen the window in which an overlapping or early callback would be seen */

  pthread_mutex_lock(&sp.mu);
  sp.seq++;
  sp.inside--;
  if (e->status == WM_STATUS_BACKUPRESTORE_END) {
    sp.ends_returned++;
    pthread_cond_broadcast(&sp.cv);
  }
  pthread_mutex_unlock(&sp.mu);
}

/* Waits until sp.<field> >= value; 0 on timeout. */
static int spin_wait(int *field, int value, unsigned timeout_ms) {
  struct timespec d = wmth_deadline(timeout_ms);
  int ok = 1;
  pthread_mutex_lock(&sp.mu);
  while (*field < value) {
    if (pthread_cond_timedwait(&sp.cv, &sp.mu, &d) != 0 && *field < value) {
      ok = 0;
      break;
    }
  }
  pthread_mutex_unlock(&sp.mu);
  return ok;
}

static int spin_get(int *field) {
  int v;
  pthread_mutex_lock(&sp.mu);
  v = *field;
  pthread_mutex_unlock(&sp.mu);
  return v;
}

typedef struct {
  wm_backup_restorer *r;
  int max_ops;
  double budget_ms;
  int ops;
  unsigned long busy;
  int failed;
} spin_x;

/* The application thread: starts operation k+1 in a tight loop while operation k runs. */
static void *spin_x_main(void *arg) {
  spin_x *x = (spin_x *)arg;
  double stop = wms_now_ms() + x->budget_ms;
  while (x->ops < x->max_ops && wms_now_ms() < stop) {
    double give_up = wms_now_ms() + wmth_limit_ms(10000);
    wm_hresult hr;
    for (;;) {
      hr = wm_backup_restorer_backup(x->r, WM_BACKUP_OVERWRITE);
      if (hr != WM_E_BACKUPRESTORE_BUSY || wms_now_ms() >= give_up) break;
      x->busy++;
    }
    if (!TCHECK_HR(hr, WM_S_OK)) {
      x->failed = 1;
      break;
    }
    x->ops++;
    /* This start was accepted because the operation before it turned idle: its END comes. */
    if (!spin_wait(&sp.ends_entered, x->ops - 1, wmth_limit_ms(30000))) {
      wmth_fail(__FILE__, __LINE__, "spin_start: END of operation %d never came", x->ops - 2);
      x->failed = 1;
      break;
    }
  }
  return NULL;
}

static void case_spin_start(void) {
  wm_backup_restorer *r = NULL;
  spin_x x;
  pthread_t tx;
  char dir[4200];
  double t0 = wms_now_ms();
  memset(&x, 0, sizeof x);
  x.max_ops = wms_quick() ? 100 : 2000;
  x.budget_ms = wms_quick() ? 20000.0 : 10000.0;
  snprintf(dir, sizeof dir, "%s/spin-backup", g_home);
  REQUIRE_OK(wm_backup_restorer_create(spin_cb, NULL, &r));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_BACKUP_PATH, dir));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, g_small_store));
  x.r = r;
  tx = wmth_start(spin_x_main, &x);
  pthread_join(tx, NULL);
  if (!spin_wait(&sp.ends_returned, x.ops, wmth_limit_ms(30000)))
    wmth_fail(__FILE__, __LINE__, "spin_start: %d END callbacks returned, expected %d", spin_get(&sp.ends_returned),
              x.ops);
  TCHECK_HR(wm_backup_restorer_wait(r, wmth_limit_ms(30000)), WM_S_OK);
  wm_backup_restorer_destroy(r);

  pthread_mutex_lock(&sp.mu);
  if (sp.early_begins)
    wmth_fail(__FILE__, __LINE__, "spin_start: %d of %d BEGINs came before the previous END had returned; first: %s",
              sp.early_begins, x.ops - 1, sp.first_problem);
  if (sp.overlaps)
    wmth_fail(__FILE__, __LINE__, "spin_start: %d callback(s) entered while another callback of the restorer was "
              "inside; first: %s", sp.overlaps, sp.first_problem);
  if (sp.begins != x.ops || sp.ends_entered != x.ops)
    wmth_fail(__FILE__, __LINE__, "spin_start: %d BEGIN, %d END for %d operations started", sp.begins,
              sp.ends_entered, x.ops);
  if (x.ops < 2 && !x.failed)
    wmth_fail(__FILE__, __LINE__, "spin_start: only %d operation(s) in the time budget", x.ops);
  printf("  spin_start: %d operations in %.0f ms, %lu BUSY retries\n", x.ops, wms_now_ms() - t0, x.busy);
  pthread_mutex_unlock(&sp.mu);
}

/* ================================================================ callbacks acting on each other */

typedef struct mutual mutual;
typedef struct {
  mutual *m;
  int idx;
  wm_backup_restorer *self, *other;
  pthread_mutex_t mu;
  int events, begins, ends, barrier_ok, in_call, call_returned;
  wm_hresult end_hr, wait_hr;
  double call_ms;
} mutual_side;

struct mutual {
  int destroy_mode; /* 1: destroy the other restorer; 0: wait for it */
  wmth_barrier bar;
  mutual_side s[2];
  wmth_flag callbacks_done;
  int driver_done;
};

static void mutual_cb(const wm_event *e, void *context) {
  mutual_side *s = (mutual_side *)context;
  mutual *m = s->m;
  int ok;
  double t0;
  pthread_mutex_lock(&s->mu);
  s->events++;
  if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) s->begins++;
  if (e->status == WM_STATUS_BACKUPRESTORE_END) {
    s->ends++;
    s->end_hr = e->hr;
  }
  pthread_mutex_unlock(&s->mu);
  if (e->status != WM_STATUS_BACKUPRESTORE_END) return;
  /* Both END callbacks inside at once, then each acts on the other's restorer. */
  ok = wmth_barrier_wait(&m->bar, 10000);
  pthread_mutex_lock(&s->mu);
  s->barrier_ok = ok;
  s->in_call = 1;
  pthread_mutex_unlock(&s->mu);
  t0 = wms_now_ms();
  if (m->destroy_mode) {
    wm_backup_restorer_destroy(s->other);
  } else {
    wm_hresult hr = wm_backup_restorer_wait(s->other, WM_INFINITE);
    pthread_mutex_lock(&s->mu);
    s->wait_hr = hr;
    pthread_mutex_unlock(&s->mu);
  }
  pthread_mutex_lock(&s->mu);
  s->call_ms = wms_now_ms() - t0;
  s->in_call = 0;
  s->call_returned = 1;
  pthread_mutex_unlock(&s->mu);
  wmth_flag_add(&m->callbacks_done, 1);
}

static void *mutual_driver(void *arg) {
  mutual *m = (mutual *)arg;
  wm_backup_restorer *r[2] = {NULL, NULL};
  int i;
  for (i = 0; i < 2; i++) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/mutual-%s-%d", g_home, m->destroy_mode ? "destroy" : "wait", i);
    REQUIRE_OK(wm_backup_restorer_create(mutual_cb, &m->s[i], &r[i]));
    REQUIRE_OK(wms_set_prop(r[i], WM_PROP_BACKUP_PATH, dir));
    REQUIRE_OK(wms_set_prop(r[i], WM_PROP_STORE_PATH, g_small_store));
    m->s[i].self = r[i];
  }
  m->s[0].other = r[1];
  m->s[1].other = r[0];
  for (i = 0; i < 2; i++) TCHECK_HR(wm_backup_restorer_backup(r[i], WM_BACKUP_OVERWRITE), WM_S_OK);
  wmth_flag_wait(&m->callbacks_done, 2, 0x7fffffff);
  /* Mutual destroy: both are destroyed already, a destroy does nothing (it waits for the
     wind-down of one destroyed from a callback). Mutual wait: this is the real destroy. */
  for (i = 0; i < 2; i++) wm_backup_restorer_destroy(r[i]);
  for (i = 0; i < 2; i++) TCHECK_HR(wm_backup_restorer_wait(r[i], 0), WM_E_HANDLE);
  m->driver_done = 1;
  return NULL;
}

static void run_mutual(int destroy_mode) {
  /* Leaked on a deadlock: the stuck threads still use it. */
  mutual *m = (mutual *)calloc(1, sizeof *m);
  const char *label = destroy_mode ? "mutual_destroy" : "mutual_wait";
  unsigned limit = 20000; /* a deadlock guard: a working library needs milliseconds */
  double t0 = wms_now_ms();
  int i, finished, events[2];
  if (!m) abort();
  m->destroy_mode = destroy_mode;
  wmth_barrier_init(&m->bar, 2);
  wmth_flag_init(&m->callbacks_done);
  for (i = 0; i < 2; i++) {
    m->s[i].m = m;
    m->s[i].idx = i;
    pthread_mutex_init(&m->s[i].mu, NULL);
  }
  finished = wmth_run_within(mutual_driver, m, limit);
  if (!finished) {
    for (i = 0; i < 2; i++) {
      mutual_side *s = &m->s[i];
      pthread_mutex_lock(&s->mu);
      wmth_fail(__FILE__, __LINE__, "%s: DEADLOCK: not finished after %u ms; restorer %c: END %s, both inside END "
                "at once: %s, %s(%c) %s", label, limit, 'A' + i, s->ends ? "entered" : "not delivered",
                s->barrier_ok ? "yes" : "no", destroy_mode ? "wm_backup_restorer_destroy" : "wm_backup_restorer_wait",
                'A' + (1 - i), s->in_call ? "still blocked" : (s->call_returned ? "returned" : "not called"));
      pthread_mutex_unlock(&s->mu);
    }
    return;
  }
  for (i = 0; i < 2; i++) {
    mutual_side *s = &m->s[i];
    if (!s->barrier_ok)
      wmth_fail(__FILE__, __LINE__, "%s: the END callbacks of A and B were never inside at the same time", label);
    if (s->begins != 1 || s->ends != 1 || s->events < 2)
      wmth_fail(__FILE__, __LINE__, "%s: restorer %c got %d BEGIN, %d END (%d events)", label, 'A' + i, s->begins,
                s->ends, s->events);
    if (s->end_hr != WM_S_OK)
      wmth_fail(__FILE__, __LINE__, "%s: restorer %c END 0x%08x (%s)", label, 'A' + i, (unsigned)s->end_hr,
                wm_hresult_message(s->end_hr));
    if (!destroy_mode && s->wait_hr != WM_S_OK && s->wait_hr != WM_E_BACKUPRESTORE_BUSY)
      wmth_fail(__FILE__, __LINE__, "%s: wm_backup_restorer_wait(%c) in %c's END callback returned 0x%08x (%s); "
                "expected WM_S_OK or WM_E_BACKUPRESTORE_BUSY", label, 'A' + (1 - i), 'A' + i, (unsigned)s->wait_hr,
                wm_hresult_message(s->wait_hr));
    events[i] = s->events;
  }
  /* Destroyed: no callback any more. */
  wms_sleep_ms(200);
  for (i = 0; i < 2; i++) {
    int now;
    pthread_mutex_lock(&m->s[i].mu);
    now = m->s[i].events;
    pthread_mutex_unlock(&m->s[i].mu);
    if (now != events[i])
      wmth_fail(__FILE__, __LINE__, "%s: restorer %c got a callback after it was destroyed", label, 'A' + i);
  }
  printf("  %s: finished in %.0f ms; the calls inside END took %.1f / %.1f ms", label, wms_now_ms() - t0,
         m->s[0].call_ms, m->s[1].call_ms);
  if (!destroy_mode)
    printf("; wait returned 0x%08x / 0x%08x", (unsigned)m->s[0].wait_hr, (unsigned)m->s[1].wait_hr);
  printf("\n");
  for (i = 0; i < 2; i++) pthread_mutex_destroy(&m->s[i].mu);
  wmth_barrier_destroy(&m->bar);
  wmth_flag_destroy(&m->callbacks_done);
  free(m);
}

static void case_mutual_destroy(void) { run_mutual(1); }
static void case_mutual_wait(void) { run_mutual(0); }

/* ================================================================ main */

typedef struct {
  const char *name;
  void (*fn)(void);
  unsigned watchdog_s;
} test_case;

int main(int argc, char **argv) {
  static const test_case cases[] = {
      {"shared_handle", case_shared_handle, 120}, {"own_handles", case_own_handles, 120},
      {"close_race", case_close_race, 120},       {"restorer_storm", case_restorer_storm, 120},
      {"chained_start", case_chained_start, 120}, {"spin_start", case_spin_start, 120},
      {"mutual_destroy", case_mutual_destroy, 60}, {"mutual_wait", case_mutual_wait, 60},
  };
  size_t i, ran = 0;
  wms_fresh_home(g_home, sizeof g_home, "wmlicense-threads");
  snprintf(g_small_store, sizeof g_small_store, "%s/small-store", g_home);
  wms_fill_store(g_small_store, 0, 8, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 0, 0);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int before = wmth_failures();
    double t0;
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    printf("[%s]\n", cases[i].name);
    fflush(stdout);
    t0 = wms_now_ms();
    wmth_watchdog_arm(cases[i].name, cases[i].watchdog_s);
    cases[i].fn();
    wmth_watchdog_disarm();
    printf("[%s] %s (%.0f ms)\n", cases[i].name, wmth_failures() == before ? "PASS" : "FAIL", wms_now_ms() - t0);
    fflush(stdout);
    ran++;
  }
  if (!ran) {
    fprintf(stderr, "no case named %s\n", argv[1]);
    return 2;
  }
  if (wmth_failures() == 0) wmt_rm_rf(g_home);
  return wmt_finish("test_threads");
}
