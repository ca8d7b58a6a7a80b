/* wm_license_store_for_each: visits every license exactly once with the data that was put, in
   key-ID byte order (memcmp, shorter prefix first), stops right after the visitor returns
   non-zero, calls nothing on an empty store, reads one snapshot, and a visitor calling its own
   store gets WM_E_BACKUPRESTORE_BUSY while another handle to the same directory works. */
#include "test_util.h"

#include <limits.h>

#define N_MADE 500            /* licenses from wmt_make_license */
#define N_EXTRA 14            /* hand-picked key IDs that test the byte order */
#define N_ALL (N_MADE + N_EXTRA)

typedef struct {
  uint8_t kid[64];
  size_t kid_len;
  uint8_t key[64];
  size_t key_len;
  char title[64];
  int has_title;
  wm_license lic; /* points into this entry */
} entry;

static entry E[N_ALL];
static size_t SORTED[N_ALL]; /* indices of E in key-ID byte order */

/* The order the contract asks for: memcmp over the common length, then the shorter first. */
static int kid_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  size_t n = alen < blen ? alen : blen;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int sorted_cmp(const void *x, const void *y) {
  const entry *a = &E[*(const size_t *)x], *b = &E[*(const size_t *)y];
  return kid_cmp(a->kid, a->kid_len, b->kid, b->kid_len);
}

/* Index in E of the license with this key ID, or -1. */
static long find_entry(const uint8_t *kid, size_t len) {
  size_t lo = 0, hi = N_ALL;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const entry *e = &E[SORTED[mid]];
    int c = kid_cmp(kid, len, e->kid, e->kid_len);
    if (c == 0) return (long)SORTED[mid];
    if (c < 0) hi = mid; else lo = mid + 1;
  }
  return -1;
}

static int same_license(const wm_license *got, const wm_license *want) {
  if (got->key_id_len != want->key_id_len || memcmp(got->key_id, want->key_id, want->key_id_len)) return 0;
  if (got->content_key_len != want->content_key_len ||
      memcmp(got->content_key, want->content_key, want->content_key_len)) return 0;
  if ((got->title == NULL) != (want->title == NULL)) return 0;
  if (want->title && strcmp(got->title, want->title) != 0) return 0;
  return got->rights == want->rights && got->play_count == want->play_count &&
         got->begin_date == want->begin_date && got->expiration_date == want->expiration_date &&
         got->issued_at == want->issued_at;
}

static void add_extra(size_t i, const void *kid, size_t len) {
  entry *e = &E[i];
  size_t k;
  memcpy(e->kid, kid, len);
  e->kid_len = len;
  e->key_len = 1 + (i * 7) % 64; /* 1..64 bytes */
  for (k = 0; k < e->key_len; k++) e->key[k] = (uint8_t)(i * 13 + k * 101 + 3);
  e->has_title = 1;
  snprintf(e->title, sizeof e->title, "extra %u \xC3\xA9", (unsigned)i);
  memset(&e->lic, 0, sizeof e->lic);
  e->lic.rights = WM_RIGHT_COPY_TO_CD | WM_RIGHT_BACKUP;
  e->lic.play_count = (int32_t)i;
  e->lic.begin_date = 1000 + (int64_t)i;
  e->lic.expiration_date = 2000000000 + (int64_t)i;
  e->lic.issued_at = 42;
}

static void build_entries(void) {
  size_t i;
  static const uint8_t ff63[63] = {
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  for (i = 0; i < N_MADE; i++) {
    entry *e = &E[i];
    char kid[32];
    uint8_t key[16];
    wm_license l;
    wmt_make_license(&l, (unsigned)i, kid, key, WM_RIGHT_PLAYBACK);
    memcpy(e->kid, kid, l.key_id_len);
    e->kid_len = l.key_id_len;
    memcpy(e->key, key, 16);
    e->key_len = 16;
    e->lic = l;
    /* Vary the other fields so a mix-up between licenses shows. */
    e->lic.rights = (i % 3 == 0) ? (WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP) : WM_RIGHT_PLAYBACK;
    e->lic.play_count = (i % 5 == 0) ? -1 : (int32_t)(i % 97);
    e->lic.begin_date = (int64_t)i * 10;
    e->lic.expiration_date = (i % 4 == 0) ? 0 : 1800000000 + (int64_t)i;
    e->has_title = (i % 2 == 0);
    if (e->has_title) snprintf(e->title, sizeof e->title, "Track %u", (unsigned)i);
  }
  /* Key IDs that only sort right when bytes compare unsigned and a prefix sorts first. */
  add_extra(N_MADE + 0, "\x00", 1);
  add_extra(N_MADE + 1, "\x00\x00", 2);
  add_extra(N_MADE + 2, "\x00\x01", 2);
  add_extra(N_MADE + 3, "\x7F", 1);
  add_extra(N_MADE + 4, "\x80", 1);
  add_extra(N_MADE + 5, "\xFF", 1);
  add_extra(N_MADE + 6, ff63, sizeof ff63);
  add_extra(N_MADE + 7, "kid-", 4);
  add_extra(N_MADE + 8, "kid-0000000", 11);         /* prefix of kid-00000000 .. kid-00000009 */
  add_extra(N_MADE + 9, "kid-00000000\x00", 13);    /* kid-00000000 plus a NUL byte */
  add_extra(N_MADE + 10, "kid-00000000\xFF", 13);
  add_extra(N_MADE + 11, "KID-1", 5);               /* upper case sorts before lower case */
  add_extra(N_MADE + 12, "kid-\xC3\xA9", 6);        /* above every "kid-<digit>" */
  add_extra(N_MADE + 13, "kid-00000499z", 13);
  for (i = 0; i < N_ALL; i++) {
    entry *e = &E[i];
    e->lic.key_id = e->kid;
    e->lic.key_id_len = e->kid_len;
    e->lic.content_key = e->key;
    e->lic.content_key_len = e->key_len;
    e->lic.title = e->has_title ? e->title : NULL;
    SORTED[i] = i;
  }
  qsort(SORTED, N_ALL, sizeof SORTED[0], sorted_cmp);
}

/* ---- the recording visitor ---- */

typedef struct {
  int calls;
  int stop_at;      /* return non-zero on this call (1-based); 0 = never */
  int32_t stop_value;
  int seen[N_ALL];
  int unknown;      /* licenses not in E */
  int mismatched;   /* data differs from what was put */
  int out_of_order; /* not strictly after the previous key ID */
  int wrong_position; /* not the license expected at this position */
  uint8_t prev[64];
  size_t prev_len;
} recorder;

static void recorder_reset(recorder *r, int stop_at, int32_t stop_value) {
  memset(r, 0, sizeof *r);
  r->stop_at = stop_at;
  r->stop_value = stop_value;
}

static int32_t record(const wm_license *l, void *ctx) {
  recorder *r = (recorder *)ctx;
  long idx = find_entry(l->key_id, l->key_id_len);
  if (r->calls > 0 && kid_cmp(r->prev, r->prev_len, l->key_id, l->key_id_len) >= 0) r->out_of_order++;
  if (l->key_id_len <= 64) {
    memcpy(r->prev, l->key_id, l->key_id_len);
    r->prev_len = l->key_id_len;
  }
  if (idx < 0) {
    r->unknown++;
  } else {
    r->seen[idx]++;
    if (!same_license(l, &E[idx].lic)) r->mismatched++;
    if (r->calls < N_ALL && (size_t)idx != SORTED[r->calls]) r->wrong_position++;
  }
  r->calls++;
  return (r->stop_at && r->calls == r->stop_at) ? r->stop_value : 0;
}

static void check_full_walk(const recorder *r, int expected_calls) {
  int i, once = 0, never = 0, more = 0;
  for (i = 0; i < N_ALL; i++) {
    if (r->seen[i] == 1) once++;
    else if (r->seen[i] == 0) never++;
    else more++;
  }
  if (r->calls != expected_calls || never || more || r->unknown || r->mismatched ||
      r->out_of_order || r->wrong_position) {
    fprintf(stderr, "walk: calls %d (want %d), once %d, never %d, more than once %d, unknown %d, "
            "mismatched %d, out of order %d, wrong position %d\n", r->calls, expected_calls, once,
            never, more, r->unknown, r->mismatched, r->out_of_order, r->wrong_position);
  }
  CHECK(r->calls == expected_calls);
  CHECK(once == N_ALL);
  CHECK(never == 0);
  CHECK(more == 0);
  CHECK(r->unknown == 0);
  CHECK(r->mismatched == 0);
  CHECK(r->out_of_order == 0);
  CHECK(r->wrong_position == 0);
}

/* ---- visitors that call back into the library ---- */

typedef struct {
  wm_license_store *self;  /* the store being visited */
  wm_license_store *other; /* another handle to the same directory */
  int calls;
  int stop_after;
  /* results of the calls on `self` (first visit) */
  wm_hresult self_count, self_get, self_put, self_put_many, self_remove, self_for_each;
  uint64_t self_count_value; /* must stay untouched */
  int self_get_visits, self_for_each_visits;
  /* results of the calls on `other` (every visit) */
  int other_count_bad, other_get_bad, other_get_mismatch;
  uint64_t other_count_value;
  wm_hresult other_put, other_remove;
  int saw_new, saw_removed_ok;
} reentry;

static int32_t count_calls(const wm_license *l, void *ctx) {
  (void)l;
  (*(int *)ctx)++;
  return 0;
}

typedef struct {
  int calls;
  int match;
  const wm_license *want;
} getter;

static int32_t check_get(const wm_license *l, void *ctx) {
  getter *g = (getter *)ctx;
  g->calls++;
  if (same_license(l, g->want)) g->match++;
  return 0;
}

static uint8_t NEW_KID[64];      /* sorts after every key ID in E */
static wm_license NEW_LICENSE;
static const size_t REMOVED = N_MADE - 1; /* kid-00000499: removed through `other` mid-walk */

static int32_t reenter(const wm_license *l, void *ctx) {
  reentry *r = (reentry *)ctx;
  long idx = find_entry(l->key_id, l->key_id_len);
  r->calls++;
  if (idx == (long)REMOVED) r->saw_removed_ok = 1;
  if (l->key_id_len == sizeof NEW_KID && memcmp(l->key_id, NEW_KID, sizeof NEW_KID) == 0) r->saw_new = 1;
  if (r->calls == 1) {
    r->self_count_value = 12345;
    r->self_count = wm_license_store_count(r->self, &r->self_count_value);
    r->self_get = wm_license_store_get(r->self, l->key_id, l->key_id_len, count_calls, &r->self_get_visits);
    r->self_put = wm_license_store_put(r->self, &E[0].lic);
    r->self_put_many = wm_license_store_put_many(r->self, &E[0].lic, 1);
    r->self_remove = wm_license_store_remove(r->self, E[1].kid, E[1].kid_len);
    r->self_for_each = wm_license_store_for_each(r->self, count_calls, &r->self_for_each_visits);
    /* Another handle may write while this walk runs; the walk keeps its snapshot. */
    r->other_put = wm_license_store_put(r->other, &NEW_LICENSE);
    r->other_remove = wm_license_store_remove(r->other, E[REMOVED].kid, E[REMOVED].kid_len);
  }
  /* Reads through the other handle work on every visit. */
  {
    uint64_t c = 0;
    getter g;
    if (wm_license_store_count(r->other, &c) != WM_S_OK) r->other_count_bad++;
    r->other_count_value = c;
    memset(&g, 0, sizeof g);
    if (idx >= 0 && idx != (long)REMOVED) {
      g.want = &E[idx].lic;
      if (wm_license_store_get(r->other, l->key_id, l->key_id_len, check_get, &g) != WM_S_OK) r->other_get_bad++;
      else if (g.calls != 1 || g.match != 1) r->other_get_mismatch++;
    }
  }
  return (r->stop_after && r->calls >= r->stop_after) ? 1 : 0;
}

/* A get whose visitor calls its own store. */
typedef struct {
  wm_license_store *self;
  int calls;
  wm_hresult count_hr, get_hr;
  uint64_t count_value;
} get_reentry;

static int32_t reenter_from_get(const wm_license *l, void *ctx) {
  get_reentry *g = (get_reentry *)ctx;
  int inner = 0;
  g->calls++;
  g->count_value = 777;
  g->count_hr = wm_license_store_count(g->self, &g->count_value);
  g->get_hr = wm_license_store_get(g->self, l->key_id, l->key_id_len, count_calls, &inner);
  if (inner != 0) g->get_hr = WM_E_UNEXPECTED; /* the inner visitor must not have run */
  return 0;
}

int main(void) {
  char dir[512];
  wm_license_store *s = NULL, *s2 = NULL;
  uint64_t count = 0;
  static recorder rec;
  size_t i;
  int calls;

  build_entries();
  memset(NEW_KID, 0xFF, sizeof NEW_KID);
  NEW_LICENSE = E[0].lic;
  NEW_LICENSE.key_id = NEW_KID;
  NEW_LICENSE.key_id_len = sizeof NEW_KID;

  wmt_temp_dir(dir, sizeof dir, "foreach");
  REQUIRE_OK(wm_license_store_open(dir, &s));

  /* Empty store: the visitor is never called. */
  calls = 0;
  CHECK_HR(wm_license_store_for_each(s, count_calls, &calls), WM_S_OK);
  CHECK(calls == 0);

  /* Put in a scrambled order (i * 263 mod N_ALL is a permutation: 263 is prime, N_ALL = 514). */
  for (i = 0; i < N_ALL; i++) {
    size_t k = (i * 263) % N_ALL;
    CHECK_HR(wm_license_store_put(s, &E[k].lic), WM_S_OK);
  }
  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  CHECK(count == N_ALL);

  /* A full walk: every license once, in byte order, with its data. */
  recorder_reset(&rec, 0, 0);
  CHECK_HR(wm_license_store_for_each(s, record, &rec), WM_S_OK);
  check_full_walk(&rec, N_ALL);

  /* The same after closing and reopening. */
  wm_license_store_close(s);
  s = NULL;
  REQUIRE_OK(wm_license_store_open(dir, &s));
  recorder_reset(&rec, 0, 0);
  CHECK_HR(wm_license_store_for_each(s, record, &rec), WM_S_OK);
  check_full_walk(&rec, N_ALL);

  /* Early stop: exactly `stop_at` calls, the first ones in order, and WM_S_OK. */
  {
    static const int stops[] = {1, 2, 7, N_ALL / 2, N_ALL - 1, N_ALL};
    static const int32_t values[] = {1, -1, 42, INT32_MIN, INT32_MAX, 1};
    size_t t;
    for (t = 0; t < sizeof stops / sizeof stops[0]; t++) {
      int k, j, first_ok = 1;
      recorder_reset(&rec, stops[t], values[t]);
      CHECK_HR(wm_license_store_for_each(s, record, &rec), WM_S_OK);
      if (rec.calls != stops[t]) {
        fprintf(stderr, "stop at %d (value %d): visitor called %d times\n", stops[t], (int)values[t],
                rec.calls);
      }
      CHECK(rec.calls == stops[t]);
      for (k = 0; k < N_ALL; k++) {
        int want = 0;
        for (j = 0; j < stops[t]; j++) {
          if (SORTED[j] == (size_t)k) want = 1;
        }
        if (rec.seen[k] != want) first_ok = 0;
      }
      CHECK(first_ok);
      CHECK(rec.mismatched == 0 && rec.out_of_order == 0 && rec.wrong_position == 0 && rec.unknown == 0);
    }
  }

  /* Re-entry: the visited handle is busy; a second handle to the same directory works, and its
     writes do not show in the walk that is running (one snapshot). */
  REQUIRE_OK(wm_license_store_open(dir, &s2));
  {
    static reentry r;
    getter g;
    memset(&r, 0, sizeof r);
    r.self = s;
    r.other = s2;
    CHECK_HR(wm_license_store_for_each(s, reenter, &r), WM_S_OK);
    CHECK(r.calls == N_ALL);
    CHECK_HR(r.self_count, WM_E_BACKUPRESTORE_BUSY);
    CHECK(r.self_count_value == 12345); /* out-pointer untouched on failure */
    CHECK_HR(r.self_get, WM_E_BACKUPRESTORE_BUSY);
    CHECK(r.self_get_visits == 0);
    CHECK_HR(r.self_put, WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(r.self_put_many, WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(r.self_remove, WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(r.self_for_each, WM_E_BACKUPRESTORE_BUSY);
    CHECK(r.self_for_each_visits == 0);
    CHECK_HR(r.other_put, WM_S_OK);
    CHECK_HR(r.other_remove, WM_S_OK);
    CHECK(r.other_count_bad == 0);
    CHECK(r.other_count_value == N_ALL); /* +1 put, -1 removed */
    CHECK(r.other_get_bad == 0);
    CHECK(r.other_get_mismatch == 0);
    CHECK(r.saw_new == 0);          /* committed after the walk began */
    CHECK(r.saw_removed_ok == 1);   /* removed after the walk began */

    /* After the walk the first handle works again and sees both changes. */
    CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
    CHECK(count == N_ALL);
    memset(&g, 0, sizeof g);
    g.want = &NEW_LICENSE;
    CHECK_HR(wm_license_store_get(s, NEW_KID, sizeof NEW_KID, check_get, &g), WM_S_OK);
    CHECK(g.calls == 1 && g.match == 1);
    calls = 0;
    CHECK_HR(wm_license_store_get(s, E[REMOVED].kid, E[REMOVED].kid_len, count_calls, &calls), WM_E_NOT_FOUND);
    CHECK(calls == 0);
    CHECK_HR(wm_license_store_remove(s, NEW_KID, sizeof NEW_KID), WM_S_OK);
    CHECK_HR(wm_license_store_put(s, &E[REMOVED].lic), WM_S_OK);

    /* A visitor that stops early also releases the handle. */
    memset(&r, 0, sizeof r);
    r.self = s;
    r.other = s2;
    r.stop_after = 3;
    CHECK_HR(wm_license_store_for_each(s, reenter, &r), WM_S_OK);
    CHECK(r.calls == 3);
    CHECK_HR(r.self_count, WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(wm_license_store_remove(s2, NEW_KID, sizeof NEW_KID), WM_S_OK);
    CHECK_HR(wm_license_store_put(s2, &E[REMOVED].lic), WM_S_OK);
    CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
    CHECK(count == N_ALL);
  }

  /* A get's visitor calling its own store: busy too; the store works again afterwards. */
  {
    get_reentry g;
    memset(&g, 0, sizeof g);
    g.self = s;
    CHECK_HR(wm_license_store_get(s, E[3].kid, E[3].kid_len, reenter_from_get, &g), WM_S_OK);
    CHECK(g.calls == 1);
    CHECK_HR(g.count_hr, WM_E_BACKUPRESTORE_BUSY);
    CHECK(g.count_value == 777);
    CHECK_HR(g.get_hr, WM_E_BACKUPRESTORE_BUSY);
    CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
    CHECK(count == N_ALL);
  }

  /* The walk through the second handle sees the same thing. */
  recorder_reset(&rec, 0, 0);
  CHECK_HR(wm_license_store_for_each(s2, record, &rec), WM_S_OK);
  check_full_walk(&rec, N_ALL);

  /* Emptied again: no visit. */
  for (i = 0; i < N_ALL; i++) CHECK_HR(wm_license_store_remove(s, E[i].kid, E[i].kid_len), WM_S_OK);
  calls = 0;
  CHECK_HR(wm_license_store_for_each(s, count_calls, &calls), WM_S_OK);
  CHECK(calls == 0);
  calls = 0;
  CHECK_HR(wm_license_store_for_each(s2, count_calls, &calls), WM_S_OK);
  CHECK(calls == 0);

  wm_license_store_close(s2);
  wm_license_store_close(s);
  wmt_rm_rf(dir);
  return wmt_finish("test_store_for_each");
}
