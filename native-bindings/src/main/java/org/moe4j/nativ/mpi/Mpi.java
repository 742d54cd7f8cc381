package org.moe4j.nativ.mpi;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * Open MPI ({@code libmpi.so.40}, Debian {@code libopenmpi-dev}/{@code openmpi-bin}) bound through FFM; nothing MPI is
 * needed at build time. {@code -Dmoe4j.mpi.lib=/path/libmpi.so.40} loads another copy.
 *
 * <p>ABI: in Open MPI every handle is a pointer. {@code MPI_Comm}, {@code MPI_Datatype}, {@code MPI_Op} and
 * {@code MPI_Errhandler} are the addresses of exported globals ({@code ompi_mpi_comm_world}, {@code ompi_mpi_float},
 * {@code ompi_mpi_op_sum}, {@code ompi_mpi_errors_return}, ...), found here with {@code dlsym};
 * {@code MPI_IN_PLACE} is {@code (void*) 1}; counts and displacements are C {@code int}. Buffers and handles are
 * passed as raw addresses ({@code long}), so a call allocates nothing. (MPICH and its derivatives use integer
 * handles instead: this binding refuses any library without the Open MPI symbols.)
 *
 * <p>The library is opened with {@code RTLD_GLOBAL} (through {@code dlopen}, not {@link
 * java.lang.foreign.SymbolLookup#libraryLookup}, which opens it locally): Open MPI loads its transport components as
 * plugins that resolve symbols of {@code libmpi} and {@code libopen-pal} from the global namespace.
 *
 * <p>Loading happens once, on first use; without the library {@link #available()} is false and {@link #reason()}
 * says why. {@link #world()} initialises MPI once per process ({@code MPI_THREAD_SERIALIZED}: any thread may call,
 * one at a time) and sets {@code MPI_ERRORS_RETURN}, so an MPI error becomes a {@link CommunicationException}
 * instead of killing the job silently.
 */
public final class Mpi {
    public static final String LIB_PROPERTY = "moe4j.mpi.lib";
    static final String SONAME = "libmpi.so.40";
    static final int MPI_THREAD_SERIALIZED = 2; // Open MPI: SINGLE 0, FUNNELED 1, SERIALIZED 2, MULTIPLE 3
    static final int MPI_MAX_ERROR_STRING = 256;
    static final long MPI_IN_PLACE = 1L;
    private static final int RTLD_NOW = 2, RTLD_GLOBAL = 0x100;

    private static Bindings bindings;
    private static String reason;
    private static MpiCommunicator world;
    private static boolean finalized;

    private Mpi() {
    }

    /** True when this process was started by {@code mpirun}/{@code srun} (an Open MPI or PMIx rank is set). */
    public static boolean launched() {
        return System.getenv("OMPI_COMM_WORLD_SIZE") != null || System.getenv("PMIX_RANK") != null;
    }

    /** True when libmpi loaded and every symbol was found (it does not initialise MPI). */
    public static synchronized boolean available() {
        load();
        return bindings != null;
    }

    /** Why MPI is unavailable, or which library was loaded. */
    public static synchronized String reason() {
        load();
        return reason;
    }

    /**
     * The world communicator, initialising MPI on the first call. Closing it finalises MPI (after which MPI cannot
     * be used again in this process).
     *
     * @throws CommunicationException when libmpi cannot be loaded or MPI_Init_thread fails
     */
    public static synchronized Communicator world() {
        if (world != null) return world;
        if (finalized) throw new CommunicationException("MPI: already finalised in this process; it cannot be initialised again");
        load();
        if (bindings == null) throw new CommunicationException("MPI unavailable: " + reason);
        world = new MpiCommunicator(bindings);
        return world;
    }

    static synchronized void finalizedWorld() {
        world = null;
        finalized = true;
    }

    private static void load() {
        if (bindings != null || reason != null) return;
        String path = System.getProperty(LIB_PROPERTY, SONAME);
        try {
            bindings = new Bindings(path);
            reason = "Open MPI: " + path;
        } catch (CommunicationException e) {
            reason = e.getMessage();
        } catch (RuntimeException | LinkageError e) {
            reason = path + " could not be bound: " + e;
        }
    }

    /** The downcall handles and the handle addresses of one loaded libmpi. */
    static final class Bindings {
        final long commWorld, typeFloat, typeDouble, typeByte, opSum, errorsReturn;
        final MethodHandle initThread, initialized, finalize, commRank, commSize, setErrhandler, allreduce, allgather,
                alltoallv, bcast, barrier, abort, errorString, commSplit, commFree;

        @SuppressWarnings("restricted")
        Bindings(String path) {
            Linker linker = Linker.nativeLinker();
            MethodHandle dlopen = linker.downcallHandle(linker.defaultLookup().find("dlopen").orElseThrow(),
                    FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_INT));
            MethodHandle dlsym = linker.downcallHandle(linker.defaultLookup().find("dlsym").orElseThrow(),
                    FunctionDescriptor.of(ADDRESS, ADDRESS, ADDRESS));
            MethodHandle dlerror = linker.downcallHandle(linker.defaultLookup().find("dlerror").orElseThrow(),
                    FunctionDescriptor.of(ADDRESS));
            MemorySegment lib;
            try (Arena a = Arena.ofConfined()) {
                lib = (MemorySegment) dlopen.invokeExact(a.allocateFrom(path), RTLD_NOW | RTLD_GLOBAL);
                if (lib.address() == 0) {
                    MemorySegment err = (MemorySegment) dlerror.invokeExact();
                    String why = err.address() == 0 ? "unknown error" : err.reinterpret(4096).getString(0);
                    throw new CommunicationException(path + " could not be loaded (" + why + "); install Open MPI "
                            + "(Debian: apt-get install openmpi-bin libopenmpi-dev) or set -D" + LIB_PROPERTY);
                }
            } catch (CommunicationException e) {
                throw e;
            } catch (Throwable t) {
                throw new CommunicationException(path + ": dlopen failed: " + t, t);
            }
            Sym s = name -> {
                try (Arena a = Arena.ofConfined()) {
                    MemorySegment p = (MemorySegment) dlsym.invokeExact(lib, a.allocateFrom(name));
                    if (p.address() == 0)
                        throw new CommunicationException(path + ": symbol " + name + " not found (is this Open MPI 4 or 5? "
                                + "other MPI libraries have another ABI)");
                    return p;
                } catch (CommunicationException e) {
                    throw e;
                } catch (Throwable t) {
                    throw new CommunicationException(path + ": dlsym(" + name + ") failed: " + t, t);
                }
            };
            commWorld = s.find("ompi_mpi_comm_world").address();
            typeFloat = s.find("ompi_mpi_float").address();
            typeDouble = s.find("ompi_mpi_double").address();
            typeByte = s.find("ompi_mpi_byte").address();
            opSum = s.find("ompi_mpi_op_sum").address();
            errorsReturn = s.find("ompi_mpi_errors_return").address();
            FunctionDescriptor intOfLong = FunctionDescriptor.of(JAVA_INT, JAVA_LONG);
            FunctionDescriptor intOfLongAddr = FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS);
            initThread = linker.downcallHandle(s.find("MPI_Init_thread"),
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, ADDRESS));
            initialized = linker.downcallHandle(s.find("MPI_Initialized"), FunctionDescriptor.of(JAVA_INT, ADDRESS));
            finalize = linker.downcallHandle(s.find("MPI_Finalize"), FunctionDescriptor.of(JAVA_INT));
            commRank = linker.downcallHandle(s.find("MPI_Comm_rank"), intOfLongAddr);
            commSize = linker.downcallHandle(s.find("MPI_Comm_size"), intOfLongAddr);
            setErrhandler = linker.downcallHandle(s.find("MPI_Comm_set_errhandler"),
                    FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG));
            // MPI_Allreduce(sendbuf, recvbuf, count, type, op, comm)
            allreduce = linker.downcallHandle(s.find("MPI_Allreduce"),
                    FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG));
            // MPI_Allgather(sendbuf, scount, stype, recvbuf, rcount, rtype, comm)
            allgather = linker.downcallHandle(s.find("MPI_Allgather"),
                    FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG));
            // MPI_Alltoallv(sbuf, scounts*, sdispls*, stype, rbuf, rcounts*, rdispls*, rtype, comm)
            alltoallv = linker.downcallHandle(s.find("MPI_Alltoallv"),
                    FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG,
                            JAVA_LONG, JAVA_LONG, JAVA_LONG));
            // MPI_Bcast(buf, count, type, root, comm)
            bcast = linker.downcallHandle(s.find("MPI_Bcast"),
                    FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG));
            barrier = linker.downcallHandle(s.find("MPI_Barrier"), intOfLong);
            abort = linker.downcallHandle(s.find("MPI_Abort"), FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT));
            // MPI_Comm_split(comm, color, key, newcomm*); MPI_Comm_free(comm*)
            commSplit = linker.downcallHandle(s.find("MPI_Comm_split"),
                    FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, ADDRESS));
            commFree = linker.downcallHandle(s.find("MPI_Comm_free"), FunctionDescriptor.of(JAVA_INT, ADDRESS));
            errorString = linker.downcallHandle(s.find("MPI_Error_string"),
                    FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS));
        }
    }

    @FunctionalInterface
    private interface Sym {
        MemorySegment find(String name);
    }
}
