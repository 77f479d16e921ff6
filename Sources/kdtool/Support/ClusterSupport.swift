import ArgumentParser
import KDMPI
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// kdtool as one rank of an MPI job (docs/distributed.md).
///
/// At start-up kdtool asks the launcher's environment whether it was started as one rank of
/// several (`mpirun -np N`, `srun`); only then is Open MPI loaded (KDMPI) and `Cluster.world`
/// set. Rank 0 speaks for the job: the other ranks print nothing on standard output and only
/// their errors on standard error, each line naming the rank. A rank that fails stops the whole
/// job (MPI_Abort) with its exit code, so no rank is left waiting for it.
enum ClusterSetup {
    /// Joins the job, if there is one; a plain run does nothing here and loads no MPI library.
    static func start() {
        do {
            if let transport = try MPITransport.launch() { Cluster.world = World(transport: transport) }
        } catch {
            warn("kdtool: error: \(error)")
            exit(Exit.rankFailed.rawValue)
        }
        let world = Cluster.world
        if world.isDistributed && !world.isRoot {
            let null = open("/dev/null", O_WRONLY)
            if null >= 0 {
                _ = dup2(null, 1)
                close(null)
            }
        }
    }

    /// Rank r's errors are worth a line; its progress and notes are rank 0's too, so they are dropped.
    static func filter(_ line: String) -> String? {
        let world = Cluster.world
        guard world.isDistributed else { return line }
        let prefix = "kdtool: error: "
        if line.hasPrefix(prefix) { return "kdtool: error: rank \(world.rank) of \(world.size): " + line.dropFirst(prefix.count) }
        return world.isRoot ? line : nil
    }

    /// Ends the process. Success, and the outcomes rank 0 reports once every rank has finished
    /// its work (3: some inputs failed; 4: a quality gate; 130: an interrupted run, which every
    /// rank agreed to stop), end cleanly; any other failure may leave ranks waiting in a
    /// collective, so it stops the whole job (MPI_Abort) with its code.
    static func end(code: Int32) -> Never {
        let world = Cluster.world
        guard world.isDistributed else { exit(code) }
        if [0, Exit.partial.rawValue, Exit.gateExceeded.rawValue, 130].contains(code) {
            world.transport?.finish()
            exit(code)
        }
        world.abort(code: code)
    }
}
