/* What the file system can throw at an operation: a FIFO where a backup, a lock file or a store
   database should be (refused, never blocking a worker), a directory the file system refuses
   (WM_E_ACCESS_DENIED), a file size limit (WM_E_DISK_FULL), a backup that appears while a
   no-overwrite backup runs, before or while it is written (left as it is:
   WM_E_BACKUP_EXISTS), a header whose count never authenticated (END reports total 0),
   VERIFY_ONLY writing nothing (not even a pending device identity), and DataPath choosing the
   embedded service and the default store without setenv. */
#include "test_util.h"

#ifdef _WIN32
int main(void) {
  WMT_SKIP_ON_WINDOWS("test_files", "FIFOs, rlimits and signals are POSIX (Windows has none of them)");
}
#else
#include "restorer_util.h"

#include <signal.h>
#include <sys/resource.h>

#define NL 40

#define REQUIRE_TRUE(cond)                                                           \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);     \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

static char g_home[512];
static wm_license g_lic[NL];
static char g_kids[NL][32];
static uint8_t g_keys[NL][16];

/* Runs a restore/backup and fails the test (instead of hanging) when END does not come. */
static wm_hresult run_guarded(wm_backup_restorer *r, wmr_recorder *rec, int backup, uint32_t flags,
                              const char *label) {
  wm_hresult hr;
  wmr_clear(rec);
  hr = backup ? wm_backup_restorer_backup(r, flags) : wm_backup_restorer_restore(r, flags);
  if (hr != WM_S_OK) return hr;
  if (wm_backup_restorer_wait(r, 20000) != WM_S_OK) {
    fprintf(stderr, "%s: no END within 20 s (a worker is blocked)\n", label);
    wmr_print_events(rec, stderr);
    _exit(1);
  }
  return hr;
}

static void fifo_cases(void) {
  char store[600], bdir[600], fifo_dir[600], path[700], lockdir[600], fstore[600];
  wmr_recorder rec;
  wm_backup_restorer *r;
  wmr_dump_t before, after;
  wm_license_store *s = NULL;

  snprintf(store, sizeof store, "%s/fifo-store", g_home);
  snprintf(bdir, sizeof bdir, "%s/fifo-backup", g_home);
  snprintf(fifo_dir, sizeof fifo_dir, "%s/fifo-restore", g_home);
  snprintf(lockdir, sizeof lockdir, "%s/fifo-lock", g_home);
  snprintf(fstore, sizeof fstore, "%s/fifo-db", g_home);
  REQUIRE_OK(wmr_put(store, g_lic, NL));
  CHECK_HR(wmr_dump(store, &before), WM_S_OK);

  wmr_init(&rec);
  r = wmr_create(&rec);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, store));

  /* A FIFO at <RestorePath>/licenses.wmlb: not a backup, and the worker is not blocked. Twice
     at once would starve a pool of two if it blocked. */
  CHECK(mkdir(fifo_dir, 0700) == 0);
  snprintf(path, sizeof path, "%s/licenses.wmlb", fifo_dir);
  CHECK(mkfifo(path, 0600) == 0);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, fifo_dir));
  CHECK_HR(run_guarded(r, &rec, 0, 0, "restore from a FIFO"), WM_S_OK);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(&rec).hr, WM_E_BACKUP_CORRUPT);
  CHECK(wmr_end(&rec).message && strstr(wmr_end(&rec).message, "not a regular file"));
  /* The FIFO named directly as RestorePath. */
  REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, path));
  CHECK_HR(run_guarded(r, &rec, 0, WM_RESTORE_VERIFY_ONLY, "verify a FIFO"), WM_S_OK);
  CHECK_HR(wmr_end(&rec).hr, WM_E_BACKUP_CORRUPT);
  CHECK_HR(wmr_dump(store, &after), WM_S_OK);
  CHECK(wmr_dumps_equal(&before, &after));
  wmr_dump_free(&after);

  /* A FIFO at the backup directory's lock file: the backup fails instead of blocking, and the
     FIFO is left as it is. */
  CHECK(mkdir(lockdir, 0700) == 0);
  snprintf(path, sizeof path, "%s/.licenses.wmlb.lock", lockdir);
  CHECK(mkfifo(path, 0600) == 0);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, lockdir));
  CHECK_HR(run_guarded(r, &rec, 1, 0, "backup with a FIFO lock file"), WM_S_OK);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_END);
  CHECK(WM_FAILED(wmr_end(&rec).hr));
  if (!wmr_end(&rec).message || !strstr(wmr_end(&rec).message, "not a regular file")) {
    fprintf(stderr, "FIFO lock file: END 0x%08x: %s\n", (unsigned)wmr_end(&rec).hr,
            wmr_end(&rec).message ? wmr_end(&rec).message : "(null)");
    CHECK(0);
  }
  snprintf(path, sizeof path, "%s/licenses.wmlb", lockdir);
  CHECK(!wmr_exists(path));

  /* A FIFO where a store's database should be: opening the store fails, it does not hang. */
  CHECK(mkdir(fstore, 0700) == 0);
  snprintf(path, sizeof path, "%s/licenses.db", fstore);
  CHECK(mkfifo(path, 0600) == 0);
  CHECK_HR(wm_license_store_open(fstore, &s), WM_E_LICENSE_STORE_ERROR);
  CHECK(s == NULL);

  /* The restorer still works: a good backup and restore. */
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
  CHECK_HR(run_guarded(r, &rec, 1, 0, "good backup"), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, NL, NL, 0);
  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
  wmr_dump_free(&before);
}

static void access_denied_case(void) {
  wmr_recorder rec;
  wm_backup_restorer *r;
  char store[600];
  /* /sys refuses new directories (EPERM or EROFS), also to root. */
  const char *denied = "/sys/wmlicense-test-backup";

  snprintf(store, sizeof store, "%s/denied-store", g_home);
  REQUIRE_OK(wmr_put(store, g_lic, 3));
  wmr_init(&rec);
  r = wmr_create(&rec);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, store));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, denied));
  CHECK_HR(run_guarded(r, &rec, 1, 0, "backup into /sys"), WM_S_OK);
  CHECK_HR(wmr_end(&rec).hr, WM_E_ACCESS_DENIED);
  CHECK(wmr_end(&rec).message && strstr(wmr_end(&rec).message, denied));
  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
}

/* With a file size limit below the backup's size: END WM_E_DISK_FULL, the previous
   backup untouched, no temporary file left. */
static void disk_full_case(void) {
  char store[600], bdir[600], file[700];
  uint8_t *old = NULL, *now = NULL;
  size_t old_len = 0, now_len = 0;
  static wm_license many[1500];
  static char kids[1500][32];
  static uint8_t keys[1500][16];
  unsigned i;

  snprintf(store, sizeof store, "%s/full-store", g_home);
  snprintf(bdir, sizeof bdir, "%s/full-backup", g_home);
  snprintf(file, sizeof file, "%s/licenses.wmlb", bdir);
  REQUIRE_OK(wmr_put(store, g_lic, 2));
  {
    wmr_recorder rec;
    wm_backup_restorer *r;
    wmr_init(&rec);
    r = wmr_create(&rec);
    REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, store));
    REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
    CHECK_HR(run_guarded(r, &rec, 1, 0, "small backup"), WM_S_OK);
    CHECK_HR(wmr_end(&rec).hr, WM_S_OK);
    wm_backup_restorer_destroy(r);
    wmr_free(&rec);
  }
  CHECK(wmr_read_file(file, &old, &old_len) == 0);
  for (i = 0; i < 1500; i++) {
    wmt_make_license(&many[i], 1000 + i, kids[i], keys[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    many[i].title = "a title long enough that 1500 licenses need more room than the file size limit allows, even in a compact binary form such as the backup's chunks";
  }
  REQUIRE_OK(wmr_put(store, many, 1500));

  {
    /* The soft limit only, for this backup, then back: writes beyond it fail with EFBIG. */
    struct rlimit saved, lim;
    wmr_recorder rec;
    wm_backup_restorer *r;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    REQUIRE_TRUE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    wmr_init(&rec);
    r = wmr_create(&rec);
    REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, store));
    REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
    /* Room for SQLite's 32 KiB shared-memory file, not for the ~250 KB backup. */
    lim = saved;
    lim.rlim_cur = 96 * 1024;
    REQUIRE_TRUE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK_HR(run_guarded(r, &rec, 1, WM_BACKUP_OVERWRITE, "backup over the size limit"), WM_S_OK);
    REQUIRE_TRUE(setrlimit(RLIMIT_FSIZE, &saved) == 0);
    signal(SIGXFSZ, old_handler);
    CHECK_HR(wmr_end(&rec).hr, WM_E_DISK_FULL);
    wm_backup_restorer_destroy(r);
    wmr_free(&rec);
  }
  CHECK(wmr_read_file(file, &now, &now_len) == 0);
  CHECK(now_len == old_len && old && now && memcmp(old, now, old_len) == 0);
  CHECK(wmr_dir_count_prefix(bdir, ".licenses.wmlb.") == 1); /* only the lock file */
  free(old);
  free(now);
}

/* A backup without WM_BACKUP_OVERWRITE while someone else's file appears at licenses.wmlb after
   the starting call checked: at BEGIN (before the job looks), or at a RESTRICTED_LICENSE event
   (while the backup is being written, after the job looked). The file is left exactly as it
   is. */
static const char *g_race_file;
static int g_race_status, g_race_written;
static void race_callback(const wm_event *e, void *context) {
  if ((int)e->status == g_race_status && !g_race_written) {
    g_race_written = 1;
    (void)wmr_write_file(g_race_file, "not ours", 8);
  }
  wmr_callback(e, context);
}

static void no_overwrite_race_case(int at_status) {
  char store[600], bdir[600], file[700];
  const char *tag = at_status == WM_STATUS_BACKUPRESTORE_BEGIN ? "begin" : "mid";
  wmr_recorder rec;
  wm_backup_restorer *r = NULL;
  uint8_t *bytes = NULL;
  size_t len = 0;

  snprintf(store, sizeof store, "%s/race-store-%s", g_home, tag);
  snprintf(bdir, sizeof bdir, "%s/race-backup-%s", g_home, tag);
  snprintf(file, sizeof file, "%s/licenses.wmlb", bdir);
  g_race_file = file;
  g_race_status = at_status;
  g_race_written = 0;
  REQUIRE_OK(wmr_put(store, g_lic, NL));
  if (at_status == WM_STATUS_RESTRICTED_LICENSE) {
    /* One license the backup skips: its event comes in the middle of writing. */
    wm_license restricted = g_lic[NL / 2];
    restricted.rights = WM_RIGHT_PLAYBACK;
    REQUIRE_OK(wmr_put(store, &restricted, 1));
  }
  CHECK(mkdir(bdir, 0700) == 0);
  wmr_init(&rec);
  REQUIRE_OK(wm_backup_restorer_create(race_callback, &rec, &r));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, store));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
  CHECK_HR(run_guarded(r, &rec, 1, 0, "no-overwrite race"), WM_S_OK);
  CHECK(g_race_written);
  CHECK_HR(wmr_end(&rec).hr, WM_E_BACKUP_EXISTS);
  CHECK(wmr_read_file(file, &bytes, &len) == 0);
  CHECK(len == 8 && bytes && memcmp(bytes, "not ours", 8) == 0);
  free(bytes);
  CHECK(wmr_dir_count_prefix(bdir, ".licenses.wmlb.") == 1); /* the lock file, no temporary */
  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
}

/* A header whose license count was altered never authenticates: END reports total 0, not the
   count the file claims. */
static void unauthenticated_total_case(void) {
  char store[600], bdir[600], file[700], bad[700], target[600];
  wmr_recorder rec;
  wm_backup_restorer *r;
  uint8_t *bytes = NULL;
  size_t len = 0;

  snprintf(store, sizeof store, "%s/count-store", g_home);
  snprintf(bdir, sizeof bdir, "%s/count-backup", g_home);
  snprintf(file, sizeof file, "%s/licenses.wmlb", bdir);
  snprintf(bad, sizeof bad, "%s/count-altered.wmlb", g_home);
  snprintf(target, sizeof target, "%s/count-target", g_home);
  REQUIRE_OK(wmr_put(store, g_lic, NL));
  wmr_init(&rec);
  r = wmr_create(&rec);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, store));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
  CHECK_HR(run_guarded(r, &rec, 1, 0, "backup"), WM_S_OK);
  CHECK(wmr_read_file(file, &bytes, &len) == 0);
  CHECK(len > 176);
  if (bytes && len > 176) {
    memset(bytes + 68, 0xFF, 8); /* license count: 18446744073709551615 */
    CHECK(wmr_write_file(bad, bytes, len) == 0);
  }
  free(bytes);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, bad));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, target));
  CHECK_HR(run_guarded(r, &rec, 0, WM_RESTORE_INDIVIDUALIZE, "altered count"), WM_S_OK);
  CHECK_HR(wmr_end(&rec).hr, WM_E_BACKUP_CORRUPT);
  CHECK(wmr_end(&rec).total == 0);
  CHECK(wmr_end(&rec).processed == 0);
  CHECK(wmr_count_status(&rec, WM_STATUS_BACKUPRESTORE_PROGRESS) == 0);
  CHECK(!wmr_exists(target));
  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
}

/* VERIFY_ONLY into a store that does not exist: it creates nothing (no pending identity beside
   the place, no store, no staging directory, no restore seed of older versions). */
static void verify_only_writes_nothing_case(const char *bdir) {
  char fresh_home[600], target[700], seed[700], pending[700];
  wmr_recorder rec;
  wm_backup_restorer *r;

  snprintf(fresh_home, sizeof fresh_home, "%s/verify-home", g_home);
  snprintf(target, sizeof target, "%s/verify-home/store", g_home);
  snprintf(seed, sizeof seed, "%s/restore.seed", g_home);
  snprintf(pending, sizeof pending, "%s/verify-home/.store.pending", g_home);
  wmr_init(&rec);
  r = wmr_create(&rec);
  CHECK(!wmr_exists(seed));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, target));
  CHECK_HR(run_guarded(r, &rec, 0, WM_RESTORE_VERIFY_ONLY | WM_RESTORE_INDIVIDUALIZE, "verify"), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, NL, NL, 0);
  CHECK(!wmr_exists(seed));
  CHECK(!wmr_exists(pending));
  CHECK(!wmr_exists(fresh_home));
  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
}

/* DataPath: the embedded service and the default store of a restorer, without setenv. A backup
   sealed by the service of one data directory does not restore through another's. */
static void data_path_case(void) {
  char a[600], b[600], bdir[600], store_a[700], key_a[700], key_b[700];
  wmr_recorder rec;
  wm_backup_restorer *r;
  wmr_dump_t d;

  snprintf(a, sizeof a, "%s/data-a", g_home);
  snprintf(b, sizeof b, "%s/data-b", g_home);
  snprintf(bdir, sizeof bdir, "%s/data-backup", g_home);
  snprintf(store_a, sizeof store_a, "%s/licenses.db", a);
  snprintf(key_a, sizeof key_a, "%s/service/initial.key", a);
  snprintf(key_b, sizeof key_b, "%s/service/initial.key", b);
  REQUIRE_OK(wmr_put(a, g_lic, NL)); /* the default store of data directory a */

  wmr_init(&rec);
  r = wmr_create(&rec);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_DATA_PATH, a));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
  CHECK_HR(run_guarded(r, &rec, 1, 0, "backup from DataPath's default store"), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, NL, NL, 0);
  CHECK(wmr_exists(store_a));
  CHECK(wmr_exists(key_a));

  /* Restored through data directory b's own service: sealed for another service. */
  REQUIRE_OK(wmr_set_str(r, WM_PROP_DATA_PATH, b));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir));
  CHECK_HR(run_guarded(r, &rec, 0, WM_RESTORE_INDIVIDUALIZE, "restore via b"), WM_S_OK);
  CHECK_HR(wmr_end(&rec).hr, WM_E_BACKUP_CORRUPT);
  CHECK(wmr_exists(key_b));
  CHECK(wmr_dump(b, &d) != WM_S_OK || d.n == 0);

  /* Back to a: into a's default store, all already there (kept as new). */
  REQUIRE_OK(wmr_set_str(r, WM_PROP_DATA_PATH, a));
  CHECK_HR(run_guarded(r, &rec, 0, 0, "restore via a"), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, 0, NL, NL);
  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
}

int main(void) {
  char bdir[600], store[600];
  unsigned i;
  wmr_recorder rec;
  wm_backup_restorer *r;

  wmr_fresh_home(g_home, sizeof g_home, "files");
  unsetenv("WMLICENSE_RESTORE_DEVICE_LIMIT");
  for (i = 0; i < NL; i++) wmt_make_license(&g_lic[i], i, g_kids[i], g_keys[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);

  /* A backup for the VERIFY_ONLY case, made before anything creates the restore seed. */
  snprintf(store, sizeof store, "%s/verify-source", g_home);
  snprintf(bdir, sizeof bdir, "%s/verify-backup", g_home);
  REQUIRE_OK(wmr_put(store, g_lic, NL));
  wmr_init(&rec);
  r = wmr_create(&rec);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, store));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
  CHECK_HR(run_guarded(r, &rec, 1, 0, "verify source backup"), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, NL, NL, 0);
  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
  verify_only_writes_nothing_case(bdir);

  fifo_cases();
  access_denied_case();
  disk_full_case();
  no_overwrite_race_case(WM_STATUS_BACKUPRESTORE_BEGIN);
  no_overwrite_race_case(WM_STATUS_RESTRICTED_LICENSE);
  unauthenticated_total_case();
  data_path_case();
  wmt_rm_rf(g_home);
  return wmt_finish("test_files");
}
#endif
