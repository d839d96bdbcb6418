/*
 * powercut.c - LD_PRELOAD shim that records what a process has made durable,
 * so that a system test can rebuild a directory "as after a power cut".
 *
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -o libpowercut.so powercut.c -ldl -lpthread
 *
 * Environment:
 *   POWERCUT_ROOT    directory to watch (the daemon's data directory)
 *   POWERCUT_SHADOW  directory in which the durable state is recorded
 * If either is unset or empty, the shim passes everything through untouched.
 *
 * Model (see tests/src/powercut.rs for the reader side):
 *   - Objects are keyed by inode: "<st_dev>_<st_ino>".
 *   - At load time (constructor) everything under ROOT is durable (it survived
 *     the previous cut): file contents go to SHADOW/data/<key>, directory
 *     listings to SHADOW/dirs/<key>, ROOT's key to SHADOW/root.
 *   - fsync/fdatasync on a regular file under ROOT: its whole current content
 *     becomes durable (SHADOW/data/<key>).
 *   - fsync/fdatasync on a directory under ROOT: its current entries (names)
 *     become durable (SHADOW/dirs/<key>), one line per entry:
 *     "<f|d>\t<key>\t<name>\n". Other entry types are ignored.
 *   - sync() and syncfs(): everything under ROOT becomes durable (the full
 *     load-time walk is redone).
 *   - Nothing else (write, close, sync_file_range, msync, ...) is intercepted.
 *
 * The real function is always called and its result and errno are returned
 * unchanged; recording happens only after a successful call and before
 * returning. Recording errors are reported as one line on stderr and never
 * affect the host process.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define KEY_MAX 64

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static void (*real_sync)(void);
static int (*real_syncfs)(int);
static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;

/* Configuration; written once by the constructor, read-only afterwards. */
static int enabled;
static char root_path[PATH_MAX];
static size_t root_len;
static char shadow_path[PATH_MAX];

/* Everything below is protected by `lock`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long tmp_counter;
static char copy_buf[1 << 16];

/* Set while this thread is recording (guards against re-entry, e.g. from a
 * signal handler that calls fsync while the lock is held). */
static __thread int in_recording;

static void resolve_real(void)
{
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_sync = (void (*)(void))dlsym(RTLD_NEXT, "sync");
    real_syncfs = (int (*)(int))dlsym(RTLD_NEXT, "syncfs");
}

static void resolve(void)
{
    pthread_once(&resolve_once, resolve_real);
}

/* Write one line "powercut: ..." to stderr. Never fails, never touches errno. */
static void logerr(const char *fmt, ...)
{
    int saved = errno;
    char buf[PATH_MAX + 256];
    int n = snprintf(buf, sizeof buf, "powercut[%ld]: ", (long)getpid());
    if (n < 0 || (size_t)n >= sizeof buf)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n;
    if (m > 0)
        len += (size_t)m;
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
    errno = saved;
}

static int make_key(const struct stat *st, char *key, size_t n)
{
    int r = snprintf(key, n, "%ju_%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    return (r < 0 || (size_t)r >= n) ? -1 : 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Create a fresh temporary file inside SHADOW; its name goes to `tmp`. */
static int open_tmp(char *tmp, size_t n)
{
    int r = snprintf(tmp, n, "%s/.tmp.%ld.%lu", shadow_path, (long)getpid(), ++tmp_counter);
    if (r < 0 || (size_t)r >= n) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

/* Build SHADOW/<sub>/<key> (or SHADOW/<sub> when key is NULL). */
static int shadow_file(char *out, size_t n, const char *sub, const char *key)
{
    int r = key ? snprintf(out, n, "%s/%s/%s", shadow_path, sub, key)
                : snprintf(out, n, "%s/%s", shadow_path, sub);
    if (r < 0 || (size_t)r >= n) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* Atomically replace `dest` with the temporary file `tmp`. */
static int commit_tmp(const char *tmp, const char *dest)
{
    if (rename(tmp, dest) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* Copy the whole content of `src` (read with pread from offset 0) to
 * SHADOW/data/<key>, atomically. */
static int record_data(int src, const char *key)
{
    char tmp[PATH_MAX], dest[PATH_MAX];
    if (shadow_file(dest, sizeof dest, "data", key) != 0) {
        logerr("data path for %s: %s", key, strerror(errno));
        return -1;
    }
    int out = open_tmp(tmp, sizeof tmp);
    if (out < 0) {
        logerr("cannot create temporary file in %s: %s", shadow_path, strerror(errno));
        return -1;
    }
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(src, copy_buf, sizeof copy_buf, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            logerr("reading data of %s: %s", key, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        if (write_all(out, copy_buf, (size_t)r) != 0) {
            logerr("writing shadow data of %s: %s", key, strerror(errno));
            goto fail;
        }
        off += r;
    }
    if (close(out) != 0) {
        out = -1;
        logerr("closing shadow data of %s: %s", key, strerror(errno));
        goto fail;
    }
    if (commit_tmp(tmp, dest) != 0) {
        logerr("renaming shadow data of %s: %s", key, strerror(errno));
        return -1;
    }
    return 0;
fail:
    if (out >= 0)
        close(out);
    unlink(tmp);
    return -1;
}

static int walk_dir(int dfd, const char *key, int recurse);

/* Handle one directory entry: append its listing line to `list` and, when
 * recursing (baseline walk), record its content / subtree. */
static void visit_entry(int dfd, const char *name, FILE *list, int recurse)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) /* ENOENT: removed concurrently, not an entry any more */
            logerr("stat %s: %s", name, strerror(errno));
        return;
    }
    char type;
    if (S_ISREG(st.st_mode))
        type = 'f';
    else if (S_ISDIR(st.st_mode))
        type = 'd';
    else
        return;
    if (strchr(name, '\n') != NULL) {
        logerr("skipping entry with a newline in its name");
        return;
    }
    char key[KEY_MAX];
    if (make_key(&st, key, sizeof key) != 0) {
        logerr("key too long for %s", name);
        return;
    }
    fprintf(list, "%c\t%s\t%s\n", type, key, name);
    if (!recurse)
        return;
    if (type == 'f') {
        int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
            logerr("open %s: %s", name, strerror(errno));
            return;
        }
        record_data(fd, key);
        close(fd);
    } else {
        int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            logerr("open directory %s: %s", name, strerror(errno));
            return;
        }
        walk_dir(sub, key, 1);
        close(sub);
    }
}

/* Record the listing of directory `dfd` (not consumed) as SHADOW/dirs/<key>;
 * when `recurse` is set, also record every file and subdirectory below it. */
static int walk_dir(int dfd, const char *key, int recurse)
{
    char tmp[PATH_MAX], dest[PATH_MAX];
    if (shadow_file(dest, sizeof dest, "dirs", key) != 0) {
        logerr("listing path for %s: %s", key, strerror(errno));
        return -1;
    }
    int rfd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0) {
        logerr("reopen directory %s: %s", key, strerror(errno));
        return -1;
    }
    DIR *d = fdopendir(rfd);
    if (d == NULL) {
        logerr("fdopendir %s: %s", key, strerror(errno));
        close(rfd);
        return -1;
    }
    int out = open_tmp(tmp, sizeof tmp);
    if (out < 0) {
        logerr("cannot create temporary file in %s: %s", shadow_path, strerror(errno));
        closedir(d);
        return -1;
    }
    FILE *list = fdopen(out, "w");
    if (list == NULL) {
        logerr("fdopen: %s", strerror(errno));
        close(out);
        unlink(tmp);
        closedir(d);
        return -1;
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL) {
            if (errno != 0) {
                logerr("readdir %s: %s", key, strerror(errno));
                rc = -1;
            }
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        visit_entry(rfd, e->d_name, list, recurse);
    }
    closedir(d);
    if (ferror(list))
        rc = -1;
    if (fclose(list) != 0)
        rc = -1;
    if (rc != 0) {
        logerr("writing listing of %s failed", key);
        unlink(tmp);
        return -1;
    }
    if (commit_tmp(tmp, dest) != 0) {
        logerr("renaming listing of %s: %s", key, strerror(errno));
        return -1;
    }
    return 0;
}

/* Everything under ROOT is durable: record ROOT's key and walk the tree. */
static void baseline(void)
{
    int dfd = open(root_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        logerr("open root %s: %s", root_path, strerror(errno));
        return;
    }
    struct stat st;
    char key[KEY_MAX], tmp[PATH_MAX], dest[PATH_MAX];
    if (fstat(dfd, &st) != 0 || make_key(&st, key, sizeof key) != 0) {
        logerr("stat root %s: %s", root_path, strerror(errno));
        close(dfd);
        return;
    }
    walk_dir(dfd, key, 1);
    close(dfd);

    if (shadow_file(dest, sizeof dest, "root", NULL) != 0) {
        logerr("root file path: %s", strerror(errno));
        return;
    }
    int out = open_tmp(tmp, sizeof tmp);
    if (out < 0) {
        logerr("cannot create temporary file in %s: %s", shadow_path, strerror(errno));
        return;
    }
    char line[KEY_MAX + 1];
    int n = snprintf(line, sizeof line, "%s\n", key);
    int ok = n > 0 && (size_t)n < sizeof line && write_all(out, line, (size_t)n) == 0;
    if (close(out) != 0)
        ok = 0;
    if (!ok) {
        logerr("writing root key failed: %s", strerror(errno));
        unlink(tmp);
        return;
    }
    if (commit_tmp(tmp, dest) != 0)
        logerr("renaming root key: %s", strerror(errno));
}

/* Is the object behind `fd` ROOT or below it? */
static int fd_under_root(int fd)
{
    char proc[64], path[PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, path, sizeof path - 1);
    if (n < 0)
        return 0;
    path[n] = '\0';
    if (strncmp(path, root_path, root_len) != 0)
        return 0;
    return path[root_len] == '\0' || path[root_len] == '/';
}

/* fsync/fdatasync succeeded on `fd`: record the file data or directory listing. */
static void record_fd(int fd)
{
    if (!fd_under_root(fd))
        return;
    struct stat st;
    char key[KEY_MAX];
    if (fstat(fd, &st) != 0 || make_key(&st, key, sizeof key) != 0) {
        logerr("fstat fd %d: %s", fd, strerror(errno));
        return;
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (S_ISDIR(st.st_mode)) {
        /* The directory fd itself can be read as well; fresh open keeps the
         * caller's readdir position untouched. */
        int dfd = open(proc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            logerr("reopen directory fd %d: %s", fd, strerror(errno));
            return;
        }
        walk_dir(dfd, key, 0);
        close(dfd);
        return;
    }
    int src = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (src >= 0) {
        record_data(src, key);
        close(src);
        return;
    }
    int open_errno = errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_ACCMODE) != O_WRONLY) {
        /* pread does not move the caller's file offset. */
        record_data(fd, key);
        return;
    }
    logerr("cannot read fd %d for recording: %s", fd, strerror(open_errno));
}

/* Run `fn` (recording) under the lock with cancellation disabled. */
static void with_lock(void (*fn)(int), int arg)
{
    if (in_recording) {
        logerr("re-entrant sync call while recording; not recorded");
        return;
    }
    int oldstate;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);
    pthread_mutex_lock(&lock);
    in_recording = 1;
    fn(arg);
    in_recording = 0;
    pthread_mutex_unlock(&lock);
    pthread_setcancelstate(oldstate, NULL);
}

static void baseline_fn(int unused)
{
    (void)unused;
    baseline();
}

static void after_fsync(int ret, int fd)
{
    if (ret != 0 || !enabled)
        return;
    int saved = errno;
    with_lock(record_fd, fd);
    errno = saved;
}

static void after_full_sync(void)
{
    if (!enabled)
        return;
    int saved = errno;
    with_lock(baseline_fn, 0);
    errno = saved;
}

int fsync(int fd)
{
    resolve();
    if (real_fsync == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int ret = real_fsync(fd);
    after_fsync(ret, fd);
    return ret;
}

int fdatasync(int fd)
{
    resolve();
    if (real_fdatasync == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int ret = real_fdatasync(fd);
    after_fsync(ret, fd);
    return ret;
}

void sync(void)
{
    resolve();
    if (real_sync != NULL)
        real_sync();
    after_full_sync();
}

int syncfs(int fd)
{
    resolve();
    if (real_syncfs == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int ret = real_syncfs(fd);
    if (ret == 0)
        after_full_sync();
    return ret;
}

/* Keep the lock consistent across fork(): a child must not inherit it locked. */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&lock);
}

static void atfork_release(void)
{
    pthread_mutex_unlock(&lock);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        logerr("mkdir %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

__attribute__((constructor)) static void powercut_init(void)
{
    int saved = errno;
    resolve();
    const char *root = getenv("POWERCUT_ROOT");
    const char *shadow = getenv("POWERCUT_SHADOW");
    if (root == NULL || shadow == NULL || root[0] == '\0' || shadow[0] == '\0')
        goto out;
    if (realpath(root, root_path) == NULL) {
        logerr("POWERCUT_ROOT %s: %s; shim disabled", root, strerror(errno));
        goto out;
    }
    root_len = strlen(root_path);
    if (root_len == 1) /* ROOT is "/": every absolute path is below it */
        root_len = 0;
    if (make_dir(shadow) != 0)
        goto out;
    if (realpath(shadow, shadow_path) == NULL) {
        logerr("POWERCUT_SHADOW %s: %s; shim disabled", shadow, strerror(errno));
        goto out;
    }
    if (strncmp(shadow_path, root_path, root_len) == 0 &&
        (shadow_path[root_len] == '\0' || shadow_path[root_len] == '/')) {
        logerr("POWERCUT_SHADOW %s is inside POWERCUT_ROOT %s; shim disabled", shadow_path,
               root_path);
        goto out;
    }
    char sub[PATH_MAX];
    if (shadow_file(sub, sizeof sub, "data", NULL) != 0 || make_dir(sub) != 0 ||
        shadow_file(sub, sizeof sub, "dirs", NULL) != 0 || make_dir(sub) != 0) {
        logerr("cannot prepare %s; shim disabled", shadow_path);
        goto out;
    }
    if (pthread_atfork(atfork_prepare, atfork_release, atfork_release) != 0)
        logerr("pthread_atfork failed; fork() while recording may deadlock the child");
    enabled = 1;
    with_lock(baseline_fn, 0);
out:
    errno = saved;
}
