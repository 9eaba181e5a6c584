/* What Python sees of liburing and the shim (cffi cdef, API mode: `...` lets
 * the C compiler supply values and layouts). */

/* Every opcode of liburing 2.3's enum io_uring_op, so that a new operation
 * class in _ops.py needs nothing here; newer ones are OURING_OP_* below. */
static const int IORING_OP_NOP;
static const int IORING_OP_READV;
static const int IORING_OP_WRITEV;
static const int IORING_OP_FSYNC;
static const int IORING_OP_READ_FIXED;
static const int IORING_OP_WRITE_FIXED;
static const int IORING_OP_POLL_ADD;
static const int IORING_OP_POLL_REMOVE;
static const int IORING_OP_SYNC_FILE_RANGE;
static const int IORING_OP_SENDMSG;
static const int IORING_OP_RECVMSG;
static const int IORING_OP_TIMEOUT;
static const int IORING_OP_TIMEOUT_REMOVE;
static const int IORING_OP_ACCEPT;
static const int IORING_OP_ASYNC_CANCEL;
static const int IORING_OP_LINK_TIMEOUT;
static const int IORING_OP_CONNECT;
static const int IORING_OP_FALLOCATE;
static const int IORING_OP_OPENAT;
static const int IORING_OP_CLOSE;
static const int IORING_OP_FILES_UPDATE;
static const int IORING_OP_STATX;
static const int IORING_OP_READ;
static const int IORING_OP_WRITE;
static const int IORING_OP_FADVISE;
static const int IORING_OP_MADVISE;
static const int IORING_OP_SEND;
static const int IORING_OP_RECV;
static const int IORING_OP_OPENAT2;
static const int IORING_OP_EPOLL_CTL;
static const int IORING_OP_SPLICE;
static const int IORING_OP_PROVIDE_BUFFERS;
static const int IORING_OP_REMOVE_BUFFERS;
static const int IORING_OP_TEE;
static const int IORING_OP_SHUTDOWN;
static const int IORING_OP_RENAMEAT;
static const int IORING_OP_UNLINKAT;
static const int IORING_OP_MKDIRAT;
static const int IORING_OP_SYMLINKAT;
static const int IORING_OP_LINKAT;
static const int IORING_OP_MSG_RING;
static const int IORING_OP_FSETXATTR;
static const int IORING_OP_SETXATTR;
static const int IORING_OP_FGETXATTR;
static const int IORING_OP_GETXATTR;
static const int IORING_OP_SOCKET;
static const int IORING_OP_URING_CMD;
static const int IORING_OP_SEND_ZC;
static const int IORING_OP_SENDMSG_ZC;
static const int IORING_OP_LAST;
#define OURING_OP_FTRUNCATE ...
#define OURING_PROBE_OPS ...

#define IORING_SETUP_SUBMIT_ALL ...
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_TASKRUN_FLAG ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...
#define IORING_FEAT_NODROP ...
#define IORING_FSYNC_DATASYNC ...
#define IORING_CQE_F_MORE ...
#define IORING_CQE_F_NOTIF ...
#define IORING_ACCEPT_MULTISHOT ...
#define IOSQE_ASYNC ...

#define AT_FDCWD ...
#define AT_SYMLINK_NOFOLLOW ...
#define AT_EMPTY_PATH ...
#define AT_REMOVEDIR ...
#define AT_SYMLINK_FOLLOW ...
#define AT_STATX_SYNC_AS_STAT ...
#define STATX_BASIC_STATS ...
#define SOCK_CLOEXEC ...

struct iovec {
    void *iov_base;
    size_t iov_len;
};

typedef int... socklen_t;

/* The kernel reads it (and the iovecs, name and control buffers it points at)
 * when RECVMSG/SENDMSG are issued, and RECVMSG writes back msg_namelen,
 * msg_controllen and msg_flags at completion. */
struct msghdr {
    void *msg_name;
    socklen_t msg_namelen;
    struct iovec *msg_iov;
    size_t msg_iovlen;
    void *msg_control;
    size_t msg_controllen;
    int msg_flags;
    ...;
};

struct statx_timestamp {
    int64_t tv_sec;
    uint32_t tv_nsec;
    ...;
};

struct statx {
    uint32_t stx_blksize;
    uint32_t stx_nlink;
    uint32_t stx_uid;
    uint32_t stx_gid;
    uint16_t stx_mode;
    uint64_t stx_ino;
    uint64_t stx_size;
    uint64_t stx_blocks;
    struct statx_timestamp stx_atime;
    struct statx_timestamp stx_ctime;
    struct statx_timestamp stx_mtime;
    uint32_t stx_rdev_major;
    uint32_t stx_rdev_minor;
    uint32_t stx_dev_major;
    uint32_t stx_dev_minor;
    ...;
};

struct ouring;

int ouring_setup(unsigned entries, unsigned cq_entries, unsigned flags, struct ouring **out);
void ouring_exit(struct ouring *o);
int ouring_ring_fd(struct ouring *o);
int ouring_wait_fd(struct ouring *o);
unsigned ouring_sq_entries(struct ouring *o);
unsigned ouring_cq_entries(struct ouring *o);
unsigned ouring_setup_flags(struct ouring *o);
unsigned ouring_features(struct ouring *o);
int ouring_probe(struct ouring *o, unsigned char *supported, unsigned n);
int ouring_register_buffers(struct ouring *o, uintptr_t base, size_t stride, size_t size,
                            unsigned count);
int ouring_unregister_buffers(struct ouring *o);
