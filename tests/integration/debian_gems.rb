# Build .gem files from the gems Debian packages install (gem2deb layout), for an app's
# vendor/cache on a machine that cannot reach rubygems.org: examples/ruby's gems were
# made with it from trixie's ruby-* packages (apt-get download; dpkg-deb -x into ROOT),
# run with the debian-13 stack's ruby. Pure-Ruby gems become ordinary gems; a gem whose
# C extension Debian compiled becomes a precompiled x86_64-linux gem carrying Debian's .so
# (the binary package has no C sources). Then `bundle install --local` writes the lock.
#   ruby debian_gems.rb ROOT OUTDIR NAME...
require "rubygems/package"
require "fileutils"
require "tmpdir"

root, out, *names = ARGV
FileUtils.mkdir_p(out)
specs = Dir[File.join(root, "usr/{share,lib/*-linux-gnu}/rubygems-integration/{all,[0-9]*}/specifications/*.gemspec")]
names.each do |name|
  path = specs.find { |p| File.basename(p, ".gemspec").sub(/-[^-]+\z/, "") == name } or abort "no Debian gem #{name}"
  spec = Gem::Specification.load(path)
  base = File.dirname(File.dirname(path))
  gemdir = File.join(base, "gems", spec.full_name)
  Dir.mktmpdir do |tmp|
    if File.directory?(gemdir)
      FileUtils.cp_r(File.join(gemdir, "."), tmp)
    else
      # The older layout: the spec's lib/ files in vendor_ruby, no gem directory.
      vendor = File.join(root, "usr/lib/ruby/vendor_ruby")
      spec.files.grep(%r{\Alib/}).each do |f|
        src = File.join(vendor, f.delete_prefix("lib/"))
        next unless File.file?(src)
        FileUtils.mkdir_p(File.join(tmp, File.dirname(f)))
        FileUtils.cp(src, File.join(tmp, f))
      end
      abort "no files for Debian gem #{name}" if Dir.empty?(tmp)
    end
    ext = Dir[File.join(base, "extensions", "*", "*", spec.full_name)].first
    if ext && !spec.extensions.empty?
      Dir.chdir(ext) { Dir["**/*.so"].each { |so| FileUtils.mkdir_p(File.join(tmp, "lib", File.dirname(so))); FileUtils.cp(so, File.join(tmp, "lib", so)) } }
      spec.extensions = []
      spec.platform = Gem::Platform.new("x86_64-linux")
      spec.required_ruby_version = "~> #{RUBY_VERSION[/\A\d+\.\d+/]}.0"
    end
    Dir.chdir(tmp) do
      spec.extra_rdoc_files = spec.extra_rdoc_files.select { |f| File.file?(f) }
      spec.test_files = []
      spec.files = Dir["**/*", ".*"].select { |f| File.file?(f) }.sort
      spec.executables = spec.executables.select { |e| File.file?(File.join(spec.bindir, e)) }
      spec.signing_key = nil
      file = Gem::Package.build(spec)
      FileUtils.mv(file, File.join(out, file))
      puts "#{file} #{File.size(File.join(out, file))}"
    end
  end
end
