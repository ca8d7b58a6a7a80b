/* The network License Management Service end to end: a real `wmlicense-service` process (its own
   --data directory, --device-limit 4, a help URL) and "machines" that share nothing but the backup
   file (each its own DataPath and StorePath). Every operation's exact event sequence is checked,
   with devices_used / device_limit.

   1. Machine A backs up through ServiceUrl (fetching the service key: CONNECTING,
      DISCONNECTING), with ServiceKey pinned (no network), and with a ServiceKey that does not
      parse (END WM_E_INVALIDARG).
   2. Machines B, C, D, E restore (devices 1..4 of 4, content keys equal A's); B again is free;
      F is refused (ERROR_WITHURL with the help URL, 4/4, no store created); VERIFY_ONLY applies
      the same limit and counts nothing.
   3. B releases its device (3/4, its licenses removed); again: WM_S_FALSE; then F restores.
   4. Reset (WM_RELEASE_ALL_DEVICES): RestorePath required; 0/4; a second one: TOO_MANY_RESETS.
   5. A merged store does not bypass the limit (a second service with --device-limit 1).
   6. Service down (refused connection: SERVICE_UNAVAILABLE within the timeout, store unchanged)
      and a listener that never answers (cancel_restore / cancel_release end the wait promptly).
   7. A backup sealed for another service: WM_E_BACKUP_CORRUPT naming that cause.
   8. https with a test CA (WMLICENSE_CA_FILE); without it: SERVICE_UNAVAILABLE.
   At the end every service gets SIGTERM and must exit 0.

   argv[1] (or $WMLICENSE_SERVICE_BIN): the service binary. */
#ifdef _WIN32
#include "test_util.h"
int main(void) {
  WMT_SKIP_ON_WINDOWS("test_service", "it starts the service with fork and exec and talks to it over POSIX sockets");
}
#else
#include "restorer_util.h"
#include "service_util.h"

#define HELP_URL "https://help.example/restore"
#define NL 5 /* A's licenses: 4 with the backup right, the last without */
#define NB 4
#define MAXEV 1024

/* ------------------------------------------------------------ recording devices_used/limit */

/* The restorer_util.h recorder plus, per event, devices_used and device_limit. */
typedef struct {
  wmr_recorder rec;
  pthread_mutex_t mu;
  size_t n;
  uint32_t used[MAXEV], limit[MAXEV];
} srec;

static void srec_cb(const wm_event *e, void *ctx) {
  srec *s = (srec *)ctx;
  pthread_mutex_lock(&s->mu);
  if (s->n < MAXEV) {
    s->used[s->n] = e->devices_used;
    s->limit[s->n] = e->device_limit;
  }
  s->n++;
  pthread_mutex_unlock(&s->mu);
  wmr_callback(e, &s->rec);
}

static void srec_init(srec *s) {
  memset(s, 0, sizeof *s);
  wmr_init(&s->rec);
  pthread_mutex_init(&s->mu, NULL);
}

static void srec_clear(srec *s) {
  wmr_clear(&s->rec);
  pthread_mutex_lock(&s->mu);
  s->n = 0;
  pthread_mutex_unlock(&s->mu);
}

static void srec_free(srec *s) {
  wmr_free(&s->rec);
  pthread_mutex_destroy(&s->mu);
}

static wm_backup_restorer *srec_create(srec *s) {
  wm_backup_restorer *r = NULL;
  REQUIRE_OK(wm_backup_restorer_create(srec_cb, s, &r));
  return r;
}

/* devices_used / device_limit of the event with `status` (the first one); 0xFFFFFFFF if none. */
static void srec_devices(srec *s, int status, uint32_t *used, uint32_t *limit) {
  size_t i;
  *used = *limit = 0xFFFFFFFFu;
  for (i = 0; i < s->rec.n && i < MAXEV; i++) {
    if (s->rec.ev[i].status == status) {
      *used = s->used[i];
      *limit = s->limit[i];
      return;
    }
  }
}

#define CHECK_DEVICES(s, status, want_used, want_limit)                                        \
  do {                                                                                         \
    uint32_t u_, l_;                                                                           \
    srec_devices((s), (status), &u_, &l_);                                                     \
    if (u_ != (uint32_t)(want_used) || l_ != (uint32_t)(want_limit)) {                         \
      fprintf(stderr, "%s:%d: %s: devices %u/%u, expected %u/%u\n", __FILE__, __LINE__,        \
              wmt_status_name(status), (unsigned)u_, (unsigned)l_, (unsigned)(want_used),      \
              (unsigned)(want_limit));                                                         \
      wmt_failures++;                                                                          \
    }                                                                                          \
  } while (0)

#define CHECK_END_DEVICES(s, u, l) CHECK_DEVICES((s), WM_STATUS_BACKUPRESTORE_END, (u), (l))

/* ------------------------------------------------------------------------ test scaffolding */

enum { OP_BACKUP = 1, OP_RESTORE = 2, OP_RELEASE = 3 };

static char base[512];
static int quick; /* WMLICENSE_TEST_QUICK: the valgrind run, slower */

static unsigned scaled(unsigned ms) {
  return quick ? ms * 4u : ms;
}

/* A machine: its own data directory (DataPath) and its own store (StorePath). */
typedef struct {
  char name[16];
  char data[700];
  char store[700];
} machine;

static void machine_init(machine *m, const char *name) {
  char dir[640];
  snprintf(m->name, sizeof m->name, "%s", name);
  snprintf(dir, sizeof dir, "%s/machine-%s", base, name);
  CHECK(mkdir(dir, 0700) == 0);
  snprintf(m->data, sizeof m->data, "%s/data", dir);
  CHECK(mkdir(m->data, 0700) == 0);
  snprintf(m->store, sizeof m->store, "%s/store", dir);
}

/* Sets the restorer's properties for `m` talking to `url` (NULL: none); `restore` / `backup`
   may be NULL. Every other property is removed. */
static void use(wm_backup_restorer *r, const machine *m, const char *url, const char *restore,
                const char *backup) {
  REQUIRE_OK(wm_backup_restorer_remove_all_props(r));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_DATA_PATH, m->data));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, m->store));
  if (url) REQUIRE_OK(wmr_set_str(r, WM_PROP_SERVICE_URL, url));
  if (restore) REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, restore));
  if (backup) REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, backup));
}

static wm_hresult start(wm_backup_restorer *r, int op, uint32_t flags) {
  switch (op) {
    case OP_BACKUP: return wm_backup_restorer_backup(r, flags);
    case OP_RESTORE: return wm_backup_restorer_restore(r, flags);
    default: return wm_backup_restorer_release(r, flags);
  }
}

/* Clears the recorder, starts `op` and waits for its END (a hang fails the test). Checks the
   invariants every operation satisfies. Returns the starting call's result. */
static wm_hresult run(wm_backup_restorer *r, srec *s, int op, uint32_t flags) {
  wm_hresult hr;
  srec_clear(s);
  hr = start(r, op, flags);
  if (hr != WM_S_OK) return hr;
  if (wm_backup_restorer_wait(r, scaled(120000)) != WM_S_OK) {
    fprintf(stderr, "an operation (%d) did not end within %u ms\n", op, scaled(120000));
    exit(1);
  }
  CHECK_EVENTS(&s->rec, op);
  return hr;
}

static uint64_t store_count(const char *path) {
  wm_license_store *st = NULL;
  uint64_t n = UINT64_MAX;
  if (!wmr_exists(path)) return UINT64_MAX;
  if (wm_license_store_open(path, &st) != WM_S_OK) return UINT64_MAX;
  if (wm_license_store_count(st, &n) != WM_S_OK) n = UINT64_MAX;
  wm_license_store_close(st);
  return n;
}

static int contains(const char *hay, const char *needle) {
  return hay && needle && strstr(hay, needle) != NULL;
}

/* A's licenses, and its dump to compare restored stores with. */
static wm_license lic[NL];
static char kids[NL][32];
static uint8_t keys[NL][16];
static wmr_dump_t a_dump;

/* The store at `path` holds exactly A's licenses with the backup right, identical to A's copies
   (content keys included). */
static void check_has_a_licenses(const char *path) {
  wmr_dump_t d;
  size_t i;
  CHECK_HR(wmr_dump(path, &d), WM_S_OK);
  CHECK(d.n == NB);
  for (i = 0; i < NB; i++) {
    const wmr_lic *got = wmr_dump_find(&d, lic[i].key_id, lic[i].key_id_len);
    const wmr_lic *want = wmr_dump_find(&a_dump, lic[i].key_id, lic[i].key_id_len);
    CHECK(got != NULL && want != NULL);
    if (got && want) {
      CHECK(wmr_lic_same(got, want));
      CHECK(got->content_key_len == 16 && memcmp(got->content_key, keys[i], 16) == 0);
    }
  }
  CHECK(wmr_dump_find(&d, lic[NB].key_id, lic[NB].key_id_len) == NULL);
  wmr_dump_free(&d);
}

static void expect_restored(srec *s, const machine *m, unsigned used, unsigned limit) {
  CHECK_SEQ(&s->rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS,
            WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s->rec, WM_S_OK, NB, NB, 0);
  CHECK_END_DEVICES(s, used, limit);
  check_has_a_licenses(m->store);
}

/* A refusal with the help URL: ERROR_WITHURL (the URL, RESTORE_FRAUD, used/limit) then END. */
static void expect_refused_with_url(srec *s, unsigned used, unsigned limit) {
  const wmr_event *u = wmr_find_status(&s->rec, WM_STATUS_ERROR_WITHURL);
  CHECK_SEQ(&s->rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_ERROR_WITHURL, WM_STATUS_BACKUPRESTORE_END);
  CHECK(u != NULL);
  if (u) {
    CHECK_HR(u->hr, WM_E_RESTORE_FRAUD);
    CHECK(u->message != NULL && strcmp(u->message, HELP_URL) == 0);
  }
  CHECK_DEVICES(s, WM_STATUS_ERROR_WITHURL, used, limit);
  CHECK_END(&s->rec, WM_E_RESTORE_FRAUD, 0, 0, 0);
  CHECK_END_DEVICES(s, used, limit);
}

/* True under valgrind (its preloaded core is in LD_PRELOAD). */
static int under_valgrind(void) {
  const char *p = getenv("LD_PRELOAD");
  return p && strstr(p, "vgpreload") != NULL;
}

/* Runs a shell command quietly (output to `log`); returns its exit status. */
static int sh(const char *cmd, const char *log) {
  char full[4096];
  int st;
  if (snprintf(full, sizeof full, "(%s) >>'%s' 2>&1", cmd, log) >= (int)sizeof full) {
    fprintf(stderr, "sh: the command is too long: %s\n", cmd);
    return -1;
  }
  fflush(stdout);
  fflush(stderr);
  st = system(full);
  return st == -1 ? -1 : (WIFEXITED(st) ? WEXITSTATUS(st) : 128);
}

/* ----------------------------------------------------------------------------------- main */

int main(int argc, char **argv) {
  const char *bin = wsvc_binary(argc, argv);
  static srec s;
  static wsvc svc, svc_one, svc_tls;
  wm_backup_restorer *r;
  machine A, B, C, D, E, F, G, X, Y, Z, W, T, U;
  machine *restorers[4];
  char home[600], sdata[600], sdata_one[600], sdata_tls[600];
  char bdir[700], bdir_pinned[700], bdir_bad[700], xb[700], yb[700], tb[700];
  char pubkey[65], url[256];
  const char *ci = getenv("CI");
  unsigned i;
  int st;

  quick = getenv("WMLICENSE_TEST_QUICK") != NULL;
  if (!bin) {
    fprintf(stderr, "test_service: the service binary (argv[1] or $WMLICENSE_SERVICE_BIN: %s) is missing; "
                    "build it with cargo build -p wmlicense-service\n",
            argc > 1 ? argv[1] : "(unset)");
    if (ci && strcmp(ci, "true") == 0) return 1;
    printf("test_service: SKIPPED (no service binary)\n");
    return 77;
  }

  wmt_temp_dir(base, sizeof base, "service");
  snprintf(home, sizeof home, "%s/home", base);
  CHECK(mkdir(home, 0700) == 0);
  setenv("WMLICENSE_HOME", home, 1); /* nothing may land in the user's own data directory */
  unsetenv("WMLICENSE_SERVICE_TIMEOUT_MS");
  unsetenv("WMLICENSE_CA_FILE");
  snprintf(sdata, sizeof sdata, "%s/service-main", base);
  snprintf(sdata_one, sizeof sdata_one, "%s/service-one", base);
  snprintf(sdata_tls, sizeof sdata_tls, "%s/service-tls", base);
  snprintf(bdir, sizeof bdir, "%s/backup", base);
  snprintf(bdir_pinned, sizeof bdir_pinned, "%s/backup-pinned", base);
  snprintf(bdir_bad, sizeof bdir_bad, "%s/backup-bad-key", base);
  snprintf(xb, sizeof xb, "%s/backup-x", base);
  snprintf(yb, sizeof yb, "%s/backup-y", base);
  snprintf(tb, sizeof tb, "%s/backup-tls", base);

  {
    const char *extra[] = {"--device-limit", "4", "--help-url", HELP_URL, NULL};
    if (wsvc_start(&svc, bin, sdata, extra, 30000) != 0) {
      fprintf(stderr, "test_service: cannot start %s\n", bin);
      return 1;
    }
    printf("service: %s (data %s)\n", svc.url, sdata);
  }
  {
    const char *extra[] = {"--device-limit", "1", NULL};
    if (wsvc_start(&svc_one, bin, sdata_one, extra, 30000) != 0) {
      fprintf(stderr, "test_service: cannot start a second service\n");
      return 1;
    }
    printf("service (limit 1): %s (data %s)\n", svc_one.url, sdata_one);
  }
  CHECK(strncmp(svc.url, "http://127.0.0.1:", 17) == 0);
  CHECK(strcmp(svc.url, svc_one.url) != 0);

  machine_init(&A, "A");
  machine_init(&B, "B");
  machine_init(&C, "C");
  machine_init(&D, "D");
  machine_init(&E, "E");
  machine_init(&F, "F");
  machine_init(&G, "G");
  machine_init(&X, "X");
  machine_init(&Y, "Y");
  machine_init(&Z, "Z");
  machine_init(&W, "W");
  machine_init(&T, "T");
  machine_init(&U, "U");

  srec_init(&s);
  r = srec_create(&s);

  /* ------------------------------------------------------------ 1. backups on machine A */
  for (i = 0; i < NL; i++) {
    wmt_make_license(&lic[i], i + 1, kids[i], keys[i],
                     i < NB ? WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP : WM_RIGHT_PLAYBACK);
    lic[i].title = i == 0 ? "First" : (i == NB ? "Not for backup" : NULL);
  }
  REQUIRE_OK(wmr_put(A.store, lic, NL));
  CHECK_HR(wmr_dump(A.store, &a_dump), WM_S_OK);
  CHECK(a_dump.n == NL);

  /* ServiceUrl set, ServiceKey unset: the key is fetched first. */
  use(r, &A, svc.url, NULL, bdir);
  CHECK_HR(run(r, &s, OP_BACKUP, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_RESTRICTED_LICENSE,
            WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s.rec, WM_S_OK, NB, NL, 1);
  {
    const wmr_event *e = wmr_find_status(&s.rec, WM_STATUS_RESTRICTED_LICENSE);
    CHECK(e && e->key_id_len == lic[NB].key_id_len && memcmp(e->key_id, lic[NB].key_id, e->key_id_len) == 0);
    CHECK(e && e->title && strcmp(e->title, "Not for backup") == 0);
  }

  /* ServiceKey pinned to the service's current key: no network at all. */
  CHECK(wsvc_current_key(bin, sdata, pubkey) == 0);
  printf("service key (keys list): %s\n", pubkey);
  use(r, &A, svc.url, NULL, bdir_pinned);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_SERVICE_KEY, pubkey));
  CHECK_HR(run(r, &s, OP_BACKUP, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_RESTRICTED_LICENSE,
            WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s.rec, WM_S_OK, NB, NL, 1);

  /* A ServiceKey that does not parse: END WM_E_INVALIDARG, nothing written. */
  use(r, &A, svc.url, NULL, bdir_bad);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_SERVICE_KEY, "zz"));
  CHECK_HR(run(r, &s, OP_BACKUP, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(&s.rec).hr, WM_E_INVALIDARG);
  CHECK(contains(wmr_end(&s.rec).message, "ServiceKey"));
  {
    char f[760];
    snprintf(f, sizeof f, "%s/licenses.wmlb", bdir_bad);
    CHECK(!wmr_exists(f));
  }

  /* ------------------------------------------ 2. restores on B, C, D, E; F is refused */
  restorers[0] = &B;
  restorers[1] = &C;
  restorers[2] = &D;
  restorers[3] = &E;
  for (i = 0; i < 4; i++) {
    machine *m = restorers[i];
    /* C restores the backup sealed with the pinned key: the same service opens it. */
    use(r, m, svc.url, m == &C ? bdir_pinned : bdir, NULL);
    CHECK(!wmr_exists(m->store));
    CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
    expect_restored(&s, m, i + 1, 4);
    printf("machine %s: restored, %u of 4 computers used\n", m->name, i + 1);
  }
  /* B again: a device already counted restores for free. */
  use(r, &B, svc.url, bdir, NULL);
  CHECK_HR(run(r, &s, OP_RESTORE, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS,
            WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s.rec, WM_S_OK, 0, NB, NB); /* every license is there already, as new */
  CHECK_END_DEVICES(&s, 4, 4);

  /* F: the fifth device is refused, with the help URL; its store is not created. */
  use(r, &F, svc.url, bdir, NULL);
  CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  expect_refused_with_url(&s, 4, 4);
  CHECK(!wmr_exists(F.store));
  printf("machine F: refused (%s)\n", wmr_end(&s.rec).message ? wmr_end(&s.rec).message : "?");

  /* VERIFY_ONLY applies the limit (F refused) and counts nothing (B still 4 of 4). */
  CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE | WM_RESTORE_VERIFY_ONLY), WM_S_OK);
  expect_refused_with_url(&s, 4, 4);
  CHECK(!wmr_exists(F.store));
  use(r, &B, svc.url, bdir, NULL);
  CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_VERIFY_ONLY), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS,
            WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s.rec, WM_S_OK, NB, NB, 0);
  CHECK_END_DEVICES(&s, 4, 4);

  /* ------------------------------------------------------------------- 3. release */
  use(r, &B, svc.url, NULL, NULL);
  CHECK_HR(run(r, &s, OP_RELEASE, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(&s.rec).hr, WM_S_OK);
  CHECK_END_DEVICES(&s, 3, 4);
  CHECK(store_count(B.store) == 0); /* B held only A's lineage: every license went with it */
  printf("machine B: released, 3 of 4 computers used\n");
  /* Again: B is not counted any more, nothing changes. */
  CHECK_HR(run(r, &s, OP_RELEASE, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(&s.rec).hr, WM_S_FALSE);
  CHECK(store_count(B.store) == 0);
  /* The freed slot: F may restore now. */
  use(r, &F, svc.url, bdir, NULL);
  CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  expect_restored(&s, &F, 4, 4);

  /* --------------------------------------------------------------------- 4. reset */
  use(r, &G, svc.url, NULL, NULL);
  srec_clear(&s);
  CHECK_HR(wm_backup_restorer_release(r, WM_RELEASE_ALL_DEVICES), WM_E_INVALID_PROPERTY);
  CHECK_HR(wm_backup_restorer_release(r, 0x2), WM_E_INVALIDARG);
  CHECK(wmr_settle(r, &s.rec) == 0);
  use(r, &G, svc.url, bdir, NULL);
  CHECK_HR(run(r, &s, OP_RELEASE, WM_RELEASE_ALL_DEVICES), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(&s.rec).hr, WM_S_OK);
  CHECK_END_DEVICES(&s, 0, 4);
  CHECK(!wmr_exists(G.store)); /* a reset touches no store */
  /* A second reset inside the window (with the other backup of the same lineage). */
  use(r, &G, svc.url, bdir_pinned, NULL);
  CHECK_HR(run(r, &s, OP_RELEASE, WM_RELEASE_ALL_DEVICES), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(&s.rec).hr, WM_E_TOO_MANY_RESETS);
  /* Every slot was freed: G is device 1 of 4. */
  CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  expect_restored(&s, &G, 1, 4);

  /* ------------------------------------------ 5. a merged store does not dodge the limit */
  {
    wm_license xl[3], yl[2];
    char xk[3][32], yk[2][32];
    uint8_t xkey[3][16], ykey[2][16];
    for (i = 0; i < 3; i++) wmt_make_license(&xl[i], 100 + i, xk[i], xkey[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    for (i = 0; i < 2; i++) wmt_make_license(&yl[i], 200 + i, yk[i], ykey[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    REQUIRE_OK(wmr_put(X.store, xl, 3));
    REQUIRE_OK(wmr_put(Y.store, yl, 2));
  }
  use(r, &X, svc_one.url, NULL, xb);
  CHECK_HR(run(r, &s, OP_BACKUP, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS,
            WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s.rec, WM_S_OK, 3, 3, 0);
  /* Y restores X's backup into its own store: device 1 of 1 for X's lineage. */
  use(r, &Y, svc_one.url, xb, NULL);
  CHECK_HR(run(r, &s, OP_RESTORE, 0), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS,
            WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s.rec, WM_S_OK, 3, 3, 0);
  CHECK_END_DEVICES(&s, 1, 1);
  CHECK(store_count(Y.store) == 5);
  /* Y backs up its merged store; Z restores it: X's lineage is at its limit. */
  use(r, &Y, svc_one.url, NULL, yb);
  CHECK_HR(run(r, &s, OP_BACKUP, 0), WM_S_OK);
  CHECK_END(&s.rec, WM_S_OK, 5, 5, 0);
  use(r, &Z, svc_one.url, yb, NULL);
  CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&s.rec, WM_E_RESTORE_FRAUD, 0, 0, 0);
  CHECK_END_DEVICES(&s, 1, 1);
  CHECK(!wmr_exists(Z.store));

  /* ------------------------------------------- 7. a backup sealed for another service */
  use(r, &W, svc.url, xb, NULL);
  CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(&s.rec).hr, WM_E_BACKUP_CORRUPT);
  CHECK(contains(wmr_end(&s.rec).message, "another service"));
  if (!contains(wmr_end(&s.rec).message, "another service"))
    fprintf(stderr, "    message: %s\n", wmr_end(&s.rec).message ? wmr_end(&s.rec).message : "(null)");
  CHECK(!wmr_exists(W.store));

  /* ------------------------------------------------------------------ 6. service down */
  {
    unsigned port = wsvc_dead_port();
    wmr_dump_t before, after;
    double t0, took;
    CHECK(port != 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
    setenv("WMLICENSE_SERVICE_TIMEOUT_MS", "1500", 1);
    CHECK_HR(wmr_dump(A.store, &before), WM_S_OK);
    use(r, &A, url, bdir, NULL);
    t0 = wsvc_now_ms();
    CHECK_HR(run(r, &s, OP_RESTORE, 0), WM_S_OK);
    took = wsvc_now_ms() - t0;
    printf("refused connection: END after %.0f ms (timeout 1500 ms)\n", took);
    CHECK(took < scaled(6000));
    CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
              WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
    CHECK_HR(wmr_end(&s.rec).hr, WM_E_RESTORE_SERVICE_UNAVAILABLE);
    CHECK(contains(wmr_end(&s.rec).message, url));
    CHECK_HR(wmr_dump(A.store, &after), WM_S_OK);
    CHECK(wmr_dumps_equal(&before, &after));
    wmr_dump_free(&after);
    /* A release cannot reach it either: F's store is unchanged. */
    use(r, &F, url, NULL, NULL);
    CHECK_HR(run(r, &s, OP_RELEASE, 0), WM_S_OK);
    CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
              WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
    CHECK_HR(wmr_end(&s.rec).hr, WM_E_RESTORE_SERVICE_UNAVAILABLE);
    CHECK(store_count(F.store) == NB);
    /* A new store is not created either. */
    use(r, &U, url, bdir, NULL);
    CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
    CHECK_HR(wmr_end(&s.rec).hr, WM_E_RESTORE_SERVICE_UNAVAILABLE);
    CHECK(!wmr_exists(U.store));

    /* A listener that accepts (in the kernel) and never answers: cancel ends the wait. */
    {
      int hole = wsvc_black_hole(&port);
      int which;
      CHECK(hole >= 0);
      snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
      setenv("WMLICENSE_SERVICE_TIMEOUT_MS", "60000", 1);
      for (which = 0; which < 2; which++) {
        double t_cancel, t_end;
        wm_hresult hr;
        if (which == 0) {
          use(r, &A, url, bdir, NULL);
        } else {
          use(r, &F, url, NULL, NULL);
        }
        srec_clear(&s);
        CHECK_HR(start(r, which == 0 ? OP_RESTORE : OP_RELEASE, 0), WM_S_OK);
        {
          /* BEGIN, CONNECTING: then the request waits for an answer that never comes. */
          double until = wsvc_now_ms() + scaled(10000);
          while (wmr_count(&s.rec) < 2 && wsvc_now_ms() < until) wsvc_sleep_ms(5);
          wsvc_sleep_ms(300);
          CHECK(wmr_count(&s.rec) == 2);
        }
        t_cancel = wsvc_now_ms();
        hr = which == 0 ? wm_backup_restorer_cancel_restore(r) : wm_backup_restorer_cancel_release(r);
        CHECK_HR(hr, WM_S_OK);
        CHECK_HR(wm_backup_restorer_wait(r, scaled(10000)), WM_S_OK);
        CHECK_EVENTS(&s.rec, which == 0 ? OP_RESTORE : OP_RELEASE);
        CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
                  WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
        CHECK_HR(wmr_end(&s.rec).hr, WM_E_OPERATION_CANCELED);
        t_end = wmr_end(&s.rec).at_ms;
        printf("cancel_%s during a network wait: END %.1f ms after the cancel\n",
               which == 0 ? "restore" : "release", t_end - t_cancel);
        CHECK(t_end - t_cancel < (quick ? 1000.0 : 250.0));
      }
      CHECK_HR(wmr_dump(A.store, &after), WM_S_OK);
      CHECK(wmr_dumps_equal(&before, &after));
      wmr_dump_free(&after);
      CHECK(store_count(F.store) == NB);
      close(hole); /* the queued connections are reset: the abandoned requests end */
    }
    wmr_dump_free(&before);
    unsetenv("WMLICENSE_SERVICE_TIMEOUT_MS");
  }

  /* ----------------------------------------------------------------------- 8. https */
  if (under_valgrind()) {
    /* memcheck cannot follow ring's assembly AEAD (TLS records): it reports uninitialised
       bytes in rustls/ring that are not there. The plain and the ASan runs cover https. */
    printf("test_service: under valgrind: the https part is skipped (ring's assembly gives "
           "memcheck false positives)\n");
  } else if (system("command -v openssl >/dev/null 2>&1") != 0) {
    if (ci && strcmp(ci, "true") == 0) {
      fprintf(stderr, "test_service: openssl is not installed (needed for the https part; CI=true)\n");
      wmt_failures++;
    } else {
      printf("test_service: openssl not installed: the https part is SKIPPED\n");
    }
  } else {
    char pki[700], cmd[4096], ca[760], cert[760], key[760], log[760];
    int ok;
    snprintf(pki, sizeof pki, "%s/pki", base);
    CHECK(mkdir(pki, 0700) == 0);
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(cert, sizeof cert, "%s/server.pem", pki);
    snprintf(key, sizeof key, "%s/server.key", pki);
    snprintf(log, sizeof log, "%s/openssl.log", pki);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
             "-subj /CN=wmlicense-test-ca -keyout ca.key -out ca.pem "
             "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign && "
             "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-subj /CN=127.0.0.1 -keyout server.key -out server.csr && "
             "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=critical,CA:FALSE\\n"
             "keyUsage=critical,digitalSignature\\nextendedKeyUsage=serverAuth\\n' > server.ext && "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile server.ext -out server.pem",
             pki);
    ok = sh(cmd, log) == 0;
    if (!ok) {
      fprintf(stderr, "test_service: openssl failed to make the test certificates (see %s)\n", log);
      wmt_failures++;
    } else {
      const char *extra[] = {"--tls-cert", cert, "--tls-key", key, NULL};
      if (wsvc_start(&svc_tls, bin, sdata_tls, extra, 30000) != 0) {
        fprintf(stderr, "test_service: cannot start the service with TLS\n");
        wmt_failures++;
      } else {
        printf("service (TLS): %s\n", svc_tls.url);
        CHECK(strncmp(svc_tls.url, "https://127.0.0.1:", 18) == 0);
        setenv("WMLICENSE_CA_FILE", ca, 1);
        use(r, &A, svc_tls.url, NULL, tb);
        CHECK_HR(run(r, &s, OP_BACKUP, 0), WM_S_OK);
        CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
                  WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_RESTRICTED_LICENSE,
                  WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
        CHECK_END(&s.rec, WM_S_OK, NB, NL, 1);
        use(r, &T, svc_tls.url, tb, NULL);
        CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
        expect_restored(&s, &T, 1, 4);
        /* Without the CA the server is not trusted: unavailable, nothing created. */
        unsetenv("WMLICENSE_CA_FILE");
        setenv("WMLICENSE_SERVICE_TIMEOUT_MS", "1000", 1);
        use(r, &U, svc_tls.url, tb, NULL);
        CHECK_HR(run(r, &s, OP_RESTORE, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
        CHECK_SEQ(&s.rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
                  WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
        CHECK_HR(wmr_end(&s.rec).hr, WM_E_RESTORE_SERVICE_UNAVAILABLE);
        CHECK(contains(wmr_end(&s.rec).message, svc_tls.url));
        CHECK(!wmr_exists(U.store));
        unsetenv("WMLICENSE_SERVICE_TIMEOUT_MS");
        st = wsvc_stop(&svc_tls, scaled(15000));
        CHECK(wsvc_exited_ok(st));
        if (!wsvc_exited_ok(st) || wmt_failures) wsvc_print_log(&svc_tls);
      }
    }
  }

  wm_backup_restorer_destroy(r);
  srec_free(&s);
  wmr_dump_free(&a_dump);

  /* SIGTERM: each service drains and exits 0. */
  st = wsvc_stop(&svc, scaled(15000));
  CHECK(wsvc_exited_ok(st));
  if (!wsvc_exited_ok(st) || wmt_failures) wsvc_print_log(&svc);
  st = wsvc_stop(&svc_one, scaled(15000));
  CHECK(wsvc_exited_ok(st));
  if (!wsvc_exited_ok(st) || wmt_failures) wsvc_print_log(&svc_one);

  if (!wmt_failures) wmt_rm_rf(base);
  return wmt_finish("test_service");
}
#endif
