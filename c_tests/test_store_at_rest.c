/* Content keys are never stored in the clear: after putting ~200 licenses with distinctive
   32-byte content keys, no file in the store directory (database, -wal, -shm, identity, anything
   else, recursively) holds any 16-byte window of any content key, nor its hex spelling — neither
   while the store is open nor after it is closed. Controls prove the scan finds what is there:
   the titles (stored in the clear) are found by the same scan, and a planted key is found. The
   identity file has mode 0600. */
#include "test_util.h"


#define N_LICENSES 200
#define KEY_LEN 32
#define WINDOW 16
#define WINDOWS_PER_KEY (KEY_LEN - WINDOW + 1)
#define TITLE_LEN 40 /* every title has exactly this many bytes */

static uint8_t KEYS[N_LICENSES][KEY_LEN];
static char KIDS[N_LICENSES][32];
static char TITLES[N_LICENSES][TITLE_LEN + 1];

/* xorshift64*: a fixed-seed generator, so failures reproduce. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

/* ---- a set of fixed-length patterns, searched with a sliding window ---- */

typedef struct {
  size_t len;       /* every pattern has this length */
  size_t count;
  uint8_t *data;    /* count * (len + sizeof(size_t)): pattern bytes, then its owner's index */
  size_t *hits;     /* per owner: how many times found */
  size_t owners;
  const char *what;
} pattern_set;

static size_t cmp_len; /* for qsort/bsearch */
static int pattern_cmp(const void *a, const void *b) { return memcmp(a, b, cmp_len); }

static void set_init(pattern_set *p, size_t len, size_t max_patterns, size_t owners, const char *what) {
  p->len = len;
  p->count = 0;
  p->data = calloc(max_patterns, len + sizeof(size_t));
  p->hits = calloc(owners, sizeof(size_t));
  p->owners = owners;
  p->what = what;
  if (!p->data || !p->hits) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
}

static void set_add(pattern_set *p, const void *bytes, size_t owner) {
  uint8_t *slot = p->data + p->count * (p->len + sizeof(size_t));
  memcpy(slot, bytes, p->len);
  memcpy(slot + p->len, &owner, sizeof owner);
  p->count++;
}

static void set_sort(pattern_set *p) {
  cmp_len = p->len;
  qsort(p->data, p->count, p->len + sizeof(size_t), pattern_cmp);
}

static void set_clear_hits(pattern_set *p) { memset(p->hits, 0, p->owners * sizeof(size_t)); }

static void set_free(pattern_set *p) {
  free(p->data);
  free(p->hits);
}

/* Counts every occurrence of every pattern in buf; returns the number of hits. */
static size_t set_scan(pattern_set *p, const uint8_t *buf, size_t n, const char *file) {
  size_t i, found = 0;
  if (n < p->len) return 0;
  cmp_len = p->len;
  for (i = 0; i + p->len <= n; i++) {
    const uint8_t *hit = bsearch(buf + i, p->data, p->count, p->len + sizeof(size_t), pattern_cmp);
    if (hit) {
      size_t owner;
      memcpy(&owner, hit + p->len, sizeof owner);
      if (p->hits[owner]++ == 0 && file) {
        /* Report the first sighting of each owner in the caller's log. */
        fprintf(stderr, "  %s of license %zu found in %s at offset %zu\n", p->what, owner, file, i);
      }
      found++;
    }
  }
  return found;
}

/* ---- reading every file of a directory tree ---- */

static pattern_set *scan_sets[4];
static size_t scan_nsets;
static int scan_quiet[4]; /* do not log hits of this set (expected ones) */
static size_t scan_files, scan_bytes;
static int scan_errors;

static int scan_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  FILE *f;
  uint8_t *buf;
  size_t n, s;
  (void)ftw;
  if (flag != FTW_F) return 0; /* directories; FTW_SL etc. are not expected in a store */
  if (!S_ISREG(sb->st_mode)) return 0;
  f = fopen(path, "rb");
  if (!f) {
    /* A file may vanish between listing and opening (the -wal on close): not an error. */
    if (errno != ENOENT) {
      fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
      scan_errors++;
    }
    return 0;
  }
  buf = malloc((size_t)sb->st_size + 1);
  if (!buf) {
    fclose(f);
    scan_errors++;
    return 0;
  }
  n = fread(buf, 1, (size_t)sb->st_size, f);
  if (ferror(f)) scan_errors++;
  fclose(f);
  scan_files++;
  scan_bytes += n;
  for (s = 0; s < scan_nsets; s++) set_scan(scan_sets[s], buf, n, scan_quiet[s] ? NULL : path);
  free(buf);
  return 0;
}

static void scan_dir(const char *dir) {
  size_t s;
  scan_files = scan_bytes = 0;
  scan_errors = 0;
  for (s = 0; s < scan_nsets; s++) set_clear_hits(scan_sets[s]);
  if (nftw(dir, scan_entry, 16, FTW_PHYS) != 0) {
    fprintf(stderr, "nftw(%s) failed: %s\n", dir, strerror(errno));
    scan_errors++;
  }
}

static size_t owners_found(const pattern_set *p) {
  size_t i, n = 0;
  for (i = 0; i < p->owners; i++) n += p->hits[i] != 0;
  return n;
}

static void hex(char *out, const uint8_t *in, size_t n, int upper) {
  const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
}

/* Whether the store directory holds a file called `name`. */
static int has_file(const char *dir, const char *name) {
  char path[700];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return stat(path, &st) == 0;
}

typedef struct {
  int calls, match;
} key_check;

/* Each visited license has the key and title that were put for its key ID. */
static int32_t check_key(const wm_license *l, void *ctx) {
  key_check *k = (key_check *)ctx;
  unsigned n;
  char kid[32];
  k->calls++;
  if (l->key_id_len >= sizeof kid) return 0;
  memcpy(kid, l->key_id, l->key_id_len);
  kid[l->key_id_len] = '\0';
  if (sscanf(kid, "at-rest-%4u", &n) != 1 || n >= N_LICENSES) return 0;
  if (l->content_key_len == KEY_LEN && memcmp(l->content_key, KEYS[n], KEY_LEN) == 0 && l->title &&
      strcmp(l->title, TITLES[n]) == 0)
    k->match++;
  return 0;
}

/* Every stored license's title was found (the removed last one may or may not be). */
static int stored_titles_found(const pattern_set *t) {
  size_t i, n = 0;
  for (i = 0; i < N_LICENSES - 1; i++) n += t->hits[i] != 0;
  if (n != N_LICENSES - 1) fprintf(stderr, "only %zu of %d titles found\n", n, N_LICENSES - 1);
  return n == N_LICENSES - 1;
}

int main(void) {
  char dir[512], decoy_dir[512];
  wm_license_store *s = NULL;
  pattern_set raw, hexes, titles;
  size_t i, w;
  uint64_t count = 0;

  (void)wmt_make_license; /* this test builds its own licenses */

  /* Distinctive keys: random-looking bytes, and no two windows alike. */
  for (i = 0; i < N_LICENSES; i++) {
    for (w = 0; w < KEY_LEN; w += 8) {
      uint64_t r = rng_next();
      memcpy(&KEYS[i][w], &r, 8);
    }
    snprintf(KIDS[i], sizeof KIDS[i], "at-rest-%04u", (unsigned)i);
    snprintf(TITLES[i], sizeof TITLES[i], "Clear title %04u of the at-rest test... ", (unsigned)i);
    if (strlen(TITLES[i]) != TITLE_LEN) {
      fprintf(stderr, "title length %zu\n", strlen(TITLES[i]));
      return 1;
    }
  }

  set_init(&raw, WINDOW, N_LICENSES * WINDOWS_PER_KEY, N_LICENSES, "a 16-byte window of the content key");
  set_init(&hexes, 2 * WINDOW, 2 * N_LICENSES * WINDOWS_PER_KEY, N_LICENSES, "the hex of a content key window");
  set_init(&titles, TITLE_LEN, N_LICENSES, N_LICENSES, "the title");
  for (i = 0; i < N_LICENSES; i++) {
    for (w = 0; w < WINDOWS_PER_KEY; w++) {
      char h[2 * WINDOW];
      set_add(&raw, &KEYS[i][w], i);
      hex(h, &KEYS[i][w], WINDOW, 0);
      set_add(&hexes, h, i);
      hex(h, &KEYS[i][w], WINDOW, 1);
      set_add(&hexes, h, i);
    }
    set_add(&titles, TITLES[i], i);
  }
  set_sort(&raw);
  set_sort(&hexes);
  set_sort(&titles);
  scan_sets[0] = &raw;
  scan_sets[1] = &hexes;
  scan_sets[2] = &titles;
  scan_quiet[2] = 1;
  scan_nsets = 3;

  /* Control: the scan finds a key planted in a file, at an odd offset, and in a subdirectory. */
  wmt_temp_dir(decoy_dir, sizeof decoy_dir, "atrest-decoy");
  {
    char sub[600], path[700];
    FILE *f;
    snprintf(sub, sizeof sub, "%s/sub", decoy_dir);
    CHECK(mkdir(sub, 0700) == 0);
    snprintf(path, sizeof path, "%s/planted", sub);
    f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
      fwrite("xyz", 1, 3, f);
      fwrite(&KEYS[123][5], 1, WINDOW, f); /* one window only */
      fwrite(TITLES[7], 1, TITLE_LEN, f);
      fclose(f);
    }
    fprintf(stderr, "control scan (one planted key window is expected below):\n");
    scan_dir(decoy_dir);
    CHECK(scan_errors == 0);
    CHECK(scan_files == 1);
    CHECK(owners_found(&raw) == 1 && raw.hits[123] == 1);
    CHECK(owners_found(&hexes) == 0);
    CHECK(owners_found(&titles) == 1 && titles.hits[7] == 1);
  }
  wmt_rm_rf(decoy_dir);

  wmt_temp_dir(dir, sizeof dir, "atrest");
  REQUIRE_OK(wm_license_store_open(dir, &s));
  for (i = 0; i < N_LICENSES; i++) {
    wm_license l;
    memset(&l, 0, sizeof l);
    l.key_id = (const uint8_t *)KIDS[i];
    l.key_id_len = strlen(KIDS[i]);
    l.content_key = KEYS[i];
    l.content_key_len = KEY_LEN;
    l.title = TITLES[i];
    l.rights = WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP;
    l.play_count = -1;
    l.issued_at = 1700000000 + (int64_t)i;
    if (i % 2) {
      CHECK_HR(wm_license_store_put(s, &l), WM_S_OK);
    } else {
      CHECK_HR(wm_license_store_put_many(s, &l, 1), WM_S_OK);
    }
  }
  /* Overwrite a few (upsert) and remove one, so freed and rewritten pages exist too. */
  for (i = 0; i < 10; i++) {
    wm_license l;
    memset(&l, 0, sizeof l);
    l.key_id = (const uint8_t *)KIDS[i];
    l.key_id_len = strlen(KIDS[i]);
    l.content_key = KEYS[i];
    l.content_key_len = KEY_LEN;
    l.title = TITLES[i];
    l.rights = WM_RIGHT_PLAYBACK;
    l.play_count = 3;
    CHECK_HR(wm_license_store_put(s, &l), WM_S_OK);
  }
  CHECK_HR(wm_license_store_remove(s, (const uint8_t *)KIDS[N_LICENSES - 1], strlen(KIDS[N_LICENSES - 1])), WM_S_OK);
  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  CHECK(count == N_LICENSES - 1);

  /* 1: the store is open (recent changes live in the -wal file). */
  fprintf(stderr, "scan of the open store:\n");
  scan_dir(dir);
  printf("open store: %zu files, %zu bytes; -wal %s, -shm %s\n", scan_files, scan_bytes,
         has_file(dir, "licenses.db-wal") ? "present" : "absent",
         has_file(dir, "licenses.db-shm") ? "present" : "absent");
  CHECK(scan_errors == 0);
  CHECK(scan_files >= 2); /* at least the database and the identity */
  CHECK(owners_found(&raw) == 0);
  CHECK(owners_found(&hexes) == 0);
  /* Control: every title, stored in the clear, is found by the same scan. */
  CHECK(stored_titles_found(&titles));

  /* The identity file: owner read/write only. */
  {
    char path[700];
    struct stat st;
    snprintf(path, sizeof path, "%s/identity", dir);
    CHECK(stat(path, &st) == 0);
    CHECK(S_ISREG(st.st_mode));
#ifndef _WIN32 /* Windows has no modes: an owner-only ACL instead (docs/platforms.md). */
    if ((st.st_mode & 0777) != 0600) {
      fprintf(stderr, "%s has mode %03o, expected 600\n", path, (unsigned)(st.st_mode & 0777));
    }
    CHECK((st.st_mode & 0777) == 0600);
#endif
  }

  /* 2: the store is closed (the -wal has been checkpointed into the database). */
  wm_license_store_close(s);
  s = NULL;
  fprintf(stderr, "scan of the closed store:\n");
  scan_dir(dir);
  printf("closed store: %zu files, %zu bytes\n", scan_files, scan_bytes);
  CHECK(scan_errors == 0);
  CHECK(scan_files >= 2);
  CHECK(owners_found(&raw) == 0);
  CHECK(owners_found(&hexes) == 0);
  CHECK(stored_titles_found(&titles));

  /* The keys are still there for the store itself: sealed, not lost. */
  {
    key_check k;
    REQUIRE_OK(wm_license_store_open(dir, &s));
    memset(&k, 0, sizeof k);
    CHECK_HR(wm_license_store_for_each(s, check_key, &k), WM_S_OK);
    CHECK(k.calls == N_LICENSES - 1);
    CHECK(k.match == N_LICENSES - 1);
    wm_license_store_close(s);
  }

  set_free(&raw);
  set_free(&hexes);
  set_free(&titles);
  wmt_rm_rf(dir);
  return wmt_finish("test_store_at_rest");
}
