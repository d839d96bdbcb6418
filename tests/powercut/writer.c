/*
 * writer.c - helper program for tests/tests/powercut_shim.rs.
 *
 * Usage: writer <root> <scenario>
 *
 * Performs a fixed sequence of file operations in <root>, then prints
 * "ready" on stdout and waits (pause) to be killed with SIGKILL. Meant to be
 * run under LD_PRELOAD=libpowercut.so with POWERCUT_ROOT=<root>.
 *
 * Scenarios:
 *   basic    (a) "synced"="A", fsync file, fsync root
 *            (b) "unsynced"="B", no file fsync, fsync root (name durable)
 *            (c) append "C" to "synced", no fsync
 *            (d) "nameless"="D", fsync file, root never fsynced afterwards
 *            (e) sync_file_range on "unsynced" (must not make it durable)
 *            plus: fsync on a bad fd still fails with EBADF through the shim
 *   replace  mkdir "sub" + fsync root; "sub/data"="old" (fdatasync + dir
 *            fsync); atomic replace of "sub/data" with "new" via
 *            tmp + fdatasync + rename + dir fsync; "sub/lost"="L" fdatasync'd
 *            and renamed to "sub/lost2" without a dir fsync
 *   sync     "early"="E" without any fsync, then sync(), then "late"="L"
 *            without any fsync
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *root;

static void die(const char *what)
{
    fprintf(stderr, "writer: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void path_in_root(char *out, size_t n, const char *name)
{
    int r = snprintf(out, n, "%s/%s", root, name);
    if (r < 0 || (size_t)r >= n) {
        errno = ENAMETOOLONG;
        die(name);
    }
}

/* Open <root>/<name> with `flags` and write `content`; returns the fd. */
static int create_with(const char *name, int flags, const char *content)
{
    char path[4096];
    path_in_root(path, sizeof path, name);
    int fd = open(path, flags | O_CLOEXEC, 0644);
    if (fd < 0)
        die(name);
    size_t len = strlen(content);
    if (write(fd, content, len) != (ssize_t)len)
        die(name);
    return fd;
}

static int open_dir(const char *name)
{
    char path[4096];
    path_in_root(path, sizeof path, name);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        die(name);
    return fd;
}

static void do_fsync(int fd, const char *what)
{
    if (fsync(fd) != 0)
        die(what);
}

static void do_fdatasync(int fd, const char *what)
{
    if (fdatasync(fd) != 0)
        die(what);
}

static void do_rename(const char *from, const char *to)
{
    char a[4096], b[4096];
    path_in_root(a, sizeof a, from);
    path_in_root(b, sizeof b, to);
    if (rename(a, b) != 0)
        die("rename");
}

static void scenario_basic(void)
{
    int rootfd = open_dir(".");

    /* (a) */
    int fd = create_with("synced", O_WRONLY | O_CREAT | O_TRUNC, "A");
    do_fsync(fd, "fsync synced");
    close(fd);
    do_fsync(rootfd, "fsync root (a)");

    /* (b) */
    int unsynced = create_with("unsynced", O_RDWR | O_CREAT | O_TRUNC, "B");
    do_fsync(rootfd, "fsync root (b)");

    /* (c) */
    fd = create_with("synced", O_WRONLY | O_APPEND, "C");
    close(fd);

    /* (d) */
    fd = create_with("nameless", O_WRONLY | O_CREAT | O_TRUNC, "D");
    do_fsync(fd, "fsync nameless");
    close(fd);

    /* (e) */
    if (sync_file_range(unsynced, 0, 0,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER) != 0)
        die("sync_file_range unsynced");

    /* Errors of the real call reach the caller unchanged. */
    errno = 0;
    if (fsync(-1) != -1 || errno != EBADF) {
        fprintf(stderr, "writer: fsync(-1) did not fail with EBADF (errno %d)\n", errno);
        exit(1);
    }
}

static void scenario_replace(void)
{
    char sub[4096];
    path_in_root(sub, sizeof sub, "sub");
    if (mkdir(sub, 0755) != 0)
        die("mkdir sub");
    int rootfd = open_dir(".");
    do_fsync(rootfd, "fsync root");
    int subfd = open_dir("sub");

    int fd = create_with("sub/data", O_WRONLY | O_CREAT | O_TRUNC, "old");
    do_fdatasync(fd, "fdatasync sub/data");
    close(fd);
    do_fsync(subfd, "fsync sub (old)");

    fd = create_with("sub/data.tmp", O_WRONLY | O_CREAT | O_TRUNC, "new");
    do_fdatasync(fd, "fdatasync sub/data.tmp");
    close(fd);
    do_rename("sub/data.tmp", "sub/data");
    do_fsync(subfd, "fsync sub (new)");

    fd = create_with("sub/lost", O_WRONLY | O_CREAT | O_TRUNC, "L");
    do_fdatasync(fd, "fdatasync sub/lost");
    close(fd);
    do_rename("sub/lost", "sub/lost2");
}

static void scenario_sync(void)
{
    int fd = create_with("early", O_WRONLY | O_CREAT | O_TRUNC, "E");
    close(fd);
    sync();
    fd = create_with("late", O_WRONLY | O_CREAT | O_TRUNC, "L");
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: writer <root> <basic|replace|sync>\n");
        return 2;
    }
    root = argv[1];
    if (strcmp(argv[2], "basic") == 0)
        scenario_basic();
    else if (strcmp(argv[2], "replace") == 0)
        scenario_replace();
    else if (strcmp(argv[2], "sync") == 0)
        scenario_sync();
    else {
        fprintf(stderr, "writer: unknown scenario %s\n", argv[2]);
        return 2;
    }
    if (printf("ready\n") < 0 || fflush(stdout) != 0)
        die("stdout");
    for (;;)
        pause();
}
