@rem Gradle wrapper launcher. The wrapper jar is not shipped by mobiledeploy: run "gradle wrapper" once.
@if "%DEBUG%"=="" @echo off
setlocal
set APP_HOME=%~dp0
set JAR=%APP_HOME%gradle\wrapper\gradle-wrapper.jar
if not exist "%JAR%" (
  echo gradle\wrapper\gradle-wrapper.jar is missing: run "gradle wrapper" in %APP_HOME% once ^(see README.md^) 1>&2
  exit /b 1
)
if defined JAVA_HOME (set JAVACMD=%JAVA_HOME%\bin\java.exe) else (set JAVACMD=java.exe)
"%JAVACMD%" -Xmx64m -Xms64m %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%JAR%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
