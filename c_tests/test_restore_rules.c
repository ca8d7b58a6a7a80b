/* The rules of a restore: the newer copy wins (issued_at; a tie keeps the store's copy), expired
   licenses are skipped, a store that does not exist needs WM_RESTORE_INDIVIDUALIZE,
   WM_RESTORE_VERIFY_ONLY changes nothing, a missing backup ends with WM_E_FILE_NOT_FOUND and a
   foreign or truncated one with WM_E_BACKUP_CORRUPT, both before the service is contacted, leaving the store as it was. */
#include "restorer_util.h"

static const uint8_t key_a[16] = {0xA0, 0x00, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
                                  0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF};
static const uint8_t key_b[16] = {0xB0, 0xB1, 0x00, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7,
                                  0xB8, 0xB9, 0xBA, 0xBB, 0xBC, 0xBD, 0xBE, 0xBF};
static const uint8_t key_c[8] = {0xC0, 0xC1, 0xC2, 0xC3, 0x00, 0xC5, 0xC6, 0xC7};

/* Key IDs (binary, with NUL bytes). */
static const uint8_t kid_x[3] = {0x00, 'X', 0x00};       /* store B has a newer copy */
static const uint8_t kid_y[3] = {0x00, 'Y', 0x01};       /* store B has an older copy */
static const uint8_t kid_w[2] = {'W', 0x00};             /* store B has a copy as new */
static const uint8_t kid_z[4] = {'Z', 0x00, 0x00, 'Z'};  /* only in the backup */
static const uint8_t kid_e[2] = {0xEE, 0x00};            /* expired, only in the backup */
static const uint8_t kid_f[2] = {0xF0, 0x0F};            /* not valid yet, only in the backup */
static const uint8_t kid_v[1] = {'V'};                   /* only in store B */

static void expect_failure_seq(wmr_recorder *rec, wm_hresult hr) {
  CHECK_EVENTS(rec, WM_OPERATION_RESTORE);
  CHECK_SEQ(rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(rec).hr, hr);
  CHECK(wmr_end(rec).message != NULL && wmr_end(rec).message[0] != '\0');
}

int main(void) {
  char home[512], a[600], bdir[600], b[600], c[600], fresh[600], empty[600], notbak[600], trunc[600],
      nofile[600], wmlb[700];
  wmr_recorder rec;
  wm_backup_restorer *r;
  /* The source store A (backup): X old, Y new, W tie, Z, E expired, F future. */
  wm_license src[6];
  /* Store B before the restore: X newer, Y older, W same issued_at (other fields), V. */
  wm_license dst[4];
  wmr_dump_t before, after;
  char kid_m[32];
  uint8_t key_m[16];

  wmr_fresh_home(home, sizeof home, "rules");
  snprintf(a, sizeof a, "%s/store-a", home);
  snprintf(bdir, sizeof bdir, "%s/backup", home);
  snprintf(b, sizeof b, "%s/store-b", home);
  snprintf(c, sizeof c, "%s/store-c", home);
  snprintf(fresh, sizeof fresh, "%s/not-there/store", home);
  snprintf(empty, sizeof empty, "%s/empty-dir", home);
  snprintf(notbak, sizeof notbak, "%s/not-a-backup.wmlb", home);
  snprintf(trunc, sizeof trunc, "%s/truncated.wmlb", home);
  snprintf(nofile, sizeof nofile, "%s/no-such-file.wmlb", home);
  snprintf(wmlb, sizeof wmlb, "%s/licenses.wmlb", bdir);

  src[0] = wmr_license(kid_x, sizeof kid_x, key_a, 16, "X from backup", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 5, 0, 0,
                       1700000000);
  src[1] = wmr_license(kid_y, sizeof kid_y, key_a, 12, "Y from backup", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, -1,
                       1600000000, 4102444800, 1700000500);
  src[2] = wmr_license(kid_w, sizeof kid_w, key_b, 16, "W from backup", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 1, 0, 0,
                       1700000700);
  src[3] = wmr_license(kid_z, sizeof kid_z, key_c, 8, NULL, WM_RIGHT_COPY_TO_CD | WM_RIGHT_BACKUP, 0, 0, 0, 1);
  src[4] = wmr_license(kid_e, sizeof kid_e, key_b, 16, "Expired", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, -1,
                       1000000000, 1100000000, 1000000000);
  src[5] = wmr_license(kid_f, sizeof kid_f, key_c, 8, "Not yet", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 2, 4000000000,
                       4100000000, 1700000900);

  dst[0] = wmr_license(kid_x, sizeof kid_x, key_b, 16, "X kept in B", WM_RIGHT_PLAYBACK, 9, 0, 0, 1700000001);
  dst[1] = wmr_license(kid_y, sizeof kid_y, key_b, 16, "Y to be replaced", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 2, 0,
                       0, 1700000499);
  dst[2] = wmr_license(kid_w, sizeof kid_w, key_c, 8, "W kept (tie)", WM_RIGHT_PLAYBACK, 7, 0, 0, 1700000700);
  dst[3] = wmr_license(kid_v, sizeof kid_v, key_c, 4, "Only in B", WM_RIGHT_PLAYBACK, -1, 0, 0, 5);

  REQUIRE_OK(wmr_put(a, src, 6));
  REQUIRE_OK(wmr_put(b, dst, 4));

  wmr_init(&rec);
  r = wmr_create(&rec);
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, a), WM_S_OK);
  CHECK_HR(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir), WM_S_OK);
  CHECK_HR(wmr_run_backup(r, &rec, 0), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&rec, WM_S_OK, 6, 6, 0);

  /* Keep-the-newer into the existing store B. */
  CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir), WM_S_OK);
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, b), WM_S_OK);
  CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  /* processed: Y, Z, F; skipped: X (B newer), W (tie), E (expired). */
  CHECK_END(&rec, WM_S_OK, 3, 6, 3);
  CHECK(wmr_end(&rec).message == NULL);
  CHECK_HR(wmr_dump(b, &after), WM_S_OK);
  CHECK(after.n == 6); /* X, Y, W, V, Z, F */
  {
    const wmr_lic *x = wmr_dump_find(&after, kid_x, sizeof kid_x);
    const wmr_lic *y = wmr_dump_find(&after, kid_y, sizeof kid_y);
    const wmr_lic *w = wmr_dump_find(&after, kid_w, sizeof kid_w);
    const wmr_lic *v = wmr_dump_find(&after, kid_v, sizeof kid_v);
    const wmr_lic *z = wmr_dump_find(&after, kid_z, sizeof kid_z);
    const wmr_lic *f = wmr_dump_find(&after, kid_f, sizeof kid_f);
    CHECK(x != NULL && wmr_lic_is(x, &dst[0])); /* B's newer X unchanged */
    CHECK(y != NULL && wmr_lic_is(y, &src[1])); /* Y replaced by the backup's newer copy */
    CHECK(w != NULL && wmr_lic_is(w, &dst[2])); /* tie: the store's copy is kept */
    CHECK(v != NULL && wmr_lic_is(v, &dst[3]));
    CHECK(z != NULL && wmr_lic_is(z, &src[3]));
    CHECK(f != NULL && wmr_lic_is(f, &src[5])); /* not valid yet is not expired */
    CHECK(wmr_dump_find(&after, kid_e, sizeof kid_e) == NULL); /* expired: not restored */
  }
  wmr_dump_free(&after);

  /* Restoring the same backup again: everything is kept or expired, nothing imported. */
  CHECK_HR(wmr_dump(b, &before), WM_S_OK);
  CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
  CHECK_END(&rec, WM_S_OK, 0, 6, 6);
  CHECK_HR(wmr_dump(b, &after), WM_S_OK);
  CHECK(wmr_dumps_equal(&before, &after));
  wmr_dump_free(&before);
  wmr_dump_free(&after);

  /* A store that does not exist, without WM_RESTORE_INDIVIDUALIZE: BEGIN, END. */
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, fresh), WM_S_OK);
  CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
  expect_failure_seq(&rec, WM_E_NEEDS_INDIVIDUALIZATION);
  CHECK(!wmr_exists(fresh));
  {
    char parent[700];
    snprintf(parent, sizeof parent, "%s/not-there", home);
    CHECK(!wmr_exists(parent) || wmr_dir_count_prefix(parent, "") == 2); /* only . and .. */
  }
  /* VERIFY_ONLY does not replace WM_RESTORE_INDIVIDUALIZE either. */
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_VERIFY_ONLY), WM_S_OK);
  expect_failure_seq(&rec, WM_E_NEEDS_INDIVIDUALIZATION);
  CHECK(!wmr_exists(fresh));

  /* VERIFY_ONLY into an existing store with other content: WM_S_OK, nothing changes. */
  {
    wm_license cl[3];
    uint64_t n_before = 0, n_after = 0;
    wm_license_store *s = NULL;
    cl[0] = wmr_license(kid_y, sizeof kid_y, key_c, 8, "older Y in C", WM_RIGHT_PLAYBACK, 1, 0, 0, 10);
    cl[1] = wmr_license(kid_v, sizeof kid_v, key_a, 16, "V in C", WM_RIGHT_BACKUP, 0, 0, 0, 20);
    wmt_make_license(&cl[2], 3, kid_m, key_m, WM_RIGHT_PLAYBACK);
    REQUIRE_OK(wmr_put(c, cl, 3));
    REQUIRE_OK(wm_license_store_open(c, &s));
    CHECK_HR(wm_license_store_count(s, &n_before), WM_S_OK);
    wm_license_store_close(s);
    CHECK_HR(wmr_dump(c, &before), WM_S_OK);
    CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, c), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_VERIFY_ONLY), WM_S_OK);
    CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
    CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
              WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
    CHECK_HR(wmr_end(&rec).hr, WM_S_OK);
    CHECK(wmr_end(&rec).total == 6);
    CHECK_HR(wmr_dump(c, &after), WM_S_OK);
    CHECK(before.n == 3);
    CHECK(wmr_dumps_equal(&before, &after));
    REQUIRE_OK(wm_license_store_open(c, &s));
    CHECK_HR(wm_license_store_count(s, &n_after), WM_S_OK);
    wm_license_store_close(s);
    CHECK(n_before == 3 && n_after == 3);
    wmr_dump_free(&before);
    wmr_dump_free(&after);
    /* With INDIVIDUALIZE too (the store exists): still nothing changes. */
    CHECK_HR(wmr_dump(c, &before), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_VERIFY_ONLY | WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
    CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
    CHECK_HR(wmr_end(&rec).hr, WM_S_OK);
    CHECK_HR(wmr_dump(c, &after), WM_S_OK);
    CHECK(wmr_dumps_equal(&before, &after));
    wmr_dump_free(&before);
    wmr_dump_free(&after);
    /* VERIFY_ONLY into a new store with INDIVIDUALIZE: S_OK and no store is created. */
    CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, fresh), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_VERIFY_ONLY | WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
    CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
    CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
              WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
    CHECK_HR(wmr_end(&rec).hr, WM_S_OK);
    CHECK(!wmr_exists(fresh));
  }

  /* Bad backups: each ends BEGIN, END with WM_E_BACKUP_CORRUPT, and store B stays as it was. */
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, b), WM_S_OK);
  CHECK_HR(wmr_dump(b, &before), WM_S_OK);
  {
    char text[1001];
    uint8_t *full = NULL;
    size_t full_len = 0, i;
    const char *line = "This is a plain text file, not a wmlicense backup. ";
    for (i = 0; i < 1000; i++) text[i] = line[i % strlen(line)];
    text[1000] = '\0';
    CHECK(mkdir(empty, 0700) == 0);
    CHECK(wmr_write_file(notbak, text, 1000) == 0);
    CHECK(wmr_read_file(wmlb, &full, &full_len) == 0);
    CHECK(full_len > 100);
    CHECK(full != NULL && wmr_write_file(trunc, full, 100) == 0);
    free(full);

    /* A directory without licenses.wmlb: no backup there (WM_E_FILE_NOT_FOUND, not "corrupt"). */
    CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, empty), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
    expect_failure_seq(&rec, WM_E_FILE_NOT_FOUND);
    CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
    expect_failure_seq(&rec, WM_E_FILE_NOT_FOUND);
    /* A file path that does not exist. */
    CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, nofile), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
    expect_failure_seq(&rec, WM_E_FILE_NOT_FOUND);
    /* 1000 bytes of text. */
    CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, notbak), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
    expect_failure_seq(&rec, WM_E_BACKUP_CORRUPT);
    CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_VERIFY_ONLY), WM_S_OK);
    expect_failure_seq(&rec, WM_E_BACKUP_CORRUPT);
    /* The first 100 bytes of a real backup (its header cut short). */
    CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, trunc), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
    expect_failure_seq(&rec, WM_E_BACKUP_CORRUPT);
  }
  CHECK_HR(wmr_dump(b, &after), WM_S_OK);
  CHECK(wmr_dumps_equal(&before, &after));
  wmr_dump_free(&before);
  wmr_dump_free(&after);
  /* A bad backup into a new store with INDIVIDUALIZE creates nothing. */
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, fresh), WM_S_OK);
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  expect_failure_seq(&rec, WM_E_BACKUP_CORRUPT);
  CHECK(!wmr_exists(fresh));

  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
  wmt_rm_rf(home);
  return wmt_finish("test_restore_rules");
}
