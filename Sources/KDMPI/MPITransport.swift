import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// The MPI transport, loaded at run time.
///
/// kdtool links no MPI library: a plain run needs none installed. Only when the launcher's
/// environment says this process is one rank of several (`mpirun` sets `OMPI_COMM_WORLD_SIZE`;
/// Slurm's `srun` sets `PMIX_RANK` / `PMI_RANK` and `SLURM_NTASKS`) does `MPITransport.launch`
/// open Open MPI's `libmpi.so.40` with `dlopen` and look up the handful of calls kdtool uses:
/// non-blocking send and receive, test, abort, finalize. Every collective is kdtool's own
/// (`World`), built on those, so the reduction order is fixed and a wait can time out.
///
/// The handles (`MPI_COMM_WORLD`, `MPI_BYTE`, `MPI_ERRORS_RETURN`) are the addresses of Open
/// MPI's predefined objects, as its `mpi.h` defines them; this is Open MPI's ABI (3.x–4.x,
/// soname 40), which is what Debian ships. MPICH's integer handles are not supported.
public final class MPITransport: Transport, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public let allowsOtherThreads: Bool
    /// From the launcher: Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE, Slurm's SLURM_JOB_NUM_NODES.
    public var allOnOneNode: Bool? {
        func env(_ k: String) -> Int? { getenv(k).flatMap { Int(String(cString: $0)) } }
        if let local = env("OMPI_COMM_WORLD_LOCAL_SIZE") { return local == size }
        if let nodes = env("SLURM_JOB_NUM_NODES") { return nodes == 1 }
        return nil
    }

    typealias InitThread =
        @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<Int32>) ->
        Int32
    typealias CommQuery = @convention(c) (UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
    typealias SetErrhandler = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Int32
    /// MPI_Isend and MPI_Irecv: (buffer, count, type, peer, tag, communicator, request). The send's
    /// buffer is `const void *` in C, the same pointer in the ABI.
    typealias Post =
        @convention(c) (
            UnsafeMutableRawPointer?, Int32, UnsafeMutableRawPointer, Int32, Int32, UnsafeMutableRawPointer,
            UnsafeMutablePointer<OpaquePointer?>
        ) -> Int32
    typealias Test = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
    typealias Abort = @convention(c) (UnsafeMutableRawPointer, Int32) -> Int32
    typealias Finalize = @convention(c) () -> Int32

    let commWorld: UnsafeMutableRawPointer
    let byteType: UnsafeMutableRawPointer
    let isend: Post
    let irecv: Post
    let test: Test
    let abortCall: Abort
    let finalize: Finalize
    private var finished = false
    /// The thread that joined the job: it waits by spinning (its wait is the step's critical path);
    /// a communication thread working during backward yields the core to the computation instead.
    let mainThread = pthread_self()

    /// The library kdtool opens: Open MPI 4.1's (Debian `libopenmpi3`, installed with `openmpi-bin`).
    public static let libraryNames = ["libmpi.so.40", "libmpi.so"]

    /// The rank count the launcher announced, or nil when this process was not started as one
    /// rank of an MPI job.
    public static func launchedSize() -> Int? {
        func env(_ k: String) -> String? { getenv(k).map { String(cString: $0) } }
        if let s = env("OMPI_COMM_WORLD_SIZE") { return Int(s) }
        if env("PMIX_RANK") != nil || env("PMI_RANK") != nil {
            return env("SLURM_NTASKS").flatMap(Int.init) ?? env("PMI_SIZE").flatMap(Int.init)
        }
        return nil
    }

    /// Joins the MPI job this process was launched into, when it was launched into one of more
    /// than one rank; nil otherwise (a plain run, or `mpirun -np 1`).
    public static func launch() throws -> MPITransport? {
        guard let n = launchedSize(), n > 1 else { return nil }
        return try MPITransport()
    }

    init() throws {
        var handle: UnsafeMutableRawPointer?
        var reasons: [String] = []
        for name in Self.libraryNames {
            // RTLD_GLOBAL: Open MPI's own plugins (opened by libmpi) resolve their symbols against it.
            handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
            if handle != nil { break }
            if let e = dlerror() { reasons.append(String(cString: e)) }
        }
        guard let handle else {
            throw CollectiveError(
                "this process was started by mpirun/srun, but Open MPI's library could not be loaded (\(reasons.joined(separator: "; "))); "
                    + "install Open MPI (Debian: apt-get install openmpi-bin, or ./tools/setup --mpi)")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let p = dlsym(handle, name) else {
                throw CollectiveError("\(Self.libraryNames[0]) has no \(name): kdtool needs Open MPI 3.x or 4.x")
            }
            return p
        }
        func function<F>(_ name: String, _: F.Type) throws -> F { unsafeBitCast(try symbol(name), to: F.self) }
        commWorld = try symbol("ompi_mpi_comm_world")
        byteType = try symbol("ompi_mpi_byte")
        isend = try function("MPI_Isend", Post.self)
        irecv = try function("MPI_Irecv", Post.self)
        test = try function("MPI_Test", Test.self)
        abortCall = try function("MPI_Abort", Abort.self)
        finalize = try function("MPI_Finalize", Finalize.self)
        let initThread = try function("MPI_Init_thread", InitThread.self)
        let commRank = try function("MPI_Comm_rank", CommQuery.self)
        let commSize = try function("MPI_Comm_size", CommQuery.self)
        let setErrhandler = try function("MPI_Comm_set_errhandler", SetErrhandler.self)
        var provided: Int32 = 0
        // MPI_THREAD_SERIALIZED (2): one thread at a time calls MPI, not always the main one (the
        // gradient sum runs on a communication thread during backward).
        guard initThread(nil, nil, 2, &provided) == 0 else { throw CollectiveError("MPI_Init_thread failed") }
        allowsOtherThreads = provided >= 2
        // Errors come back as codes, so kdtool can name the rank and the operation before it stops the job.
        _ = setErrhandler(commWorld, try symbol("ompi_mpi_errors_return"))
        var r: Int32 = 0
        var s: Int32 = 0
        guard commRank(commWorld, &r) == 0, commSize(commWorld, &s) == 0, s >= 1, r >= 0, r < s else {
            throw CollectiveError("MPI_Comm_rank/MPI_Comm_size failed")
        }
        rank = Int(r)
        size = Int(s)
    }

    /// Messages larger than this go in pieces (MPI counts are 32-bit).
    static let piece = 1 << 30

    public func exchange(
        send: (bytes: UnsafeRawBufferPointer, to: Int)?, receive: (bytes: UnsafeMutableRawBufferPointer, from: Int)?, tag: Int32,
        timeout: Double, what: String
    ) throws {
        let sendCount = send?.bytes.count ?? 0
        let receiveCount = receive?.bytes.count ?? 0
        var offset = 0
        // One piece each way per round; a zero-length message still goes (the receiver expects it).
        repeat {
            var requests: [OpaquePointer?] = []
            var peers: [Int] = []
            /// Posts this round's piece of one direction (`total` bytes from `base`) to or from `peer`.
            func post(_ call: Post, _ base: UnsafeMutableRawPointer?, total: Int, peer: Int) throws {
                guard offset < total || offset == 0 else { return }
                var req: OpaquePointer?
                let n = min(Self.piece, max(0, total - offset))
                let rc = call(base.map { $0 + offset }, Int32(n), byteType, Int32(peer), tag, commWorld, &req)
                guard rc == 0 else { throw failure(rc, peer: peer, what: what) }
                requests.append(req)
                peers.append(peer)
            }
            if let receive { try post(irecv, receive.bytes.baseAddress, total: receiveCount, peer: receive.from) }
            if let send { try post(isend, UnsafeMutableRawPointer(mutating: send.bytes.baseAddress), total: sendCount, peer: send.to) }
            try wait(&requests, peers: peers, timeout: timeout, what: what)
            offset += Self.piece
        } while offset < max(sendCount, receiveCount)
    }

    /// Polls until every request completes; a peer silent past `timeout` is reported by rank.
    func wait(_ requests: inout [OpaquePointer?], peers: [Int], timeout: Double, what: String) throws {
        var done = [Bool](repeating: false, count: requests.count)
        let deadline = monotonicSeconds() + timeout
        var polls = 0
        let patient = pthread_equal(pthread_self(), mainThread) == 0
        let spins = patient ? 20 : 2000
        while true {
            for i in requests.indices where !done[i] {
                var flag: Int32 = 0
                let rc = test(&requests[i], &flag, nil)
                guard rc == 0 else { throw failure(rc, peer: peers[i], what: what) }
                if flag != 0 { done[i] = true }
            }
            if !done.contains(false) { return }
            polls += 1
            // Spin briefly (a step's allreduce is typically under a millisecond), then back off.
            if polls > spins {
                if monotonicSeconds() > deadline {
                    let silent = peers.enumerated().filter { !done[$0.offset] }.map { "rank \($0.element)" }
                    throw CollectiveError(
                        "rank \(rank): no message from \(Set(silent).sorted().joined(separator: ", ")) for \(Int(timeout)) s during \(what); "
                            + "that rank has died or is stuck (--rank-timeout sets the wait)")
                }
                usleep(polls > 20000 ? 1000 : patient ? 50 : 20)
            }
        }
    }

    func failure(_ code: Int32, peer: Int, what: String) -> CollectiveError {
        CollectiveError("rank \(rank): MPI error \(code) talking to rank \(peer) during \(what); that rank has probably died")
    }

    public func abort(code: Int32) -> Never {
        _ = abortCall(commWorld, code)
        exit(code)
    }

    public func finish() {
        guard !finished else { return }
        finished = true
        _ = finalize()
    }
}
